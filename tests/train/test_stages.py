"""Training on a release's stages: TRAINING_STAGE=auto switches the data mid-run, the
switch is logged in the seed's shape, the metrics show the boundary, every tracker
records the run, and a run killed after the switch resumes on the new stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from stagewise.config.training import load_training_config
from stagewise.pipeline.tasks.data import prepare
from stagewise.train.recipe import train
from tests.train.conftest import config_data, dataset_records, write_config, write_jsonl
from tests.train.test_trackers import wandb_history


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """iris and wine as sample stores with train and test splits (what `data_processing`
    writes)."""
    root = tmp_path_factory.mktemp("stores")
    for name in ("iris", "wine"):
        train_rows, test_rows = dataset_records(name)
        rows = [{**r, "split": "train"} for r in train_rows]
        rows += [{**r, "split": "test"} for r in test_rows]
        write_jsonl(root / "raw" / f"{name}.jsonl", rows)
        prepare(
            context={
                "inputs": {"rows": str(root / "raw" / f"{name}.jsonl")},
                "outputs": {"store": str(root / name)},
            },
            split_column="split",
        )
    return root


def make_release(repo: Path, stores: Path, switch_at: int) -> Path:
    (repo / "stages").mkdir(parents=True)
    stage_config = {
        "stages": {
            "pretraining": {
                "config_file": "stages/pretraining.json",
                "priority": 1,
                "auto_switch_conditions": [{"epoch": 0, "condition": "start"}],
            },
            "finetuning": {
                "config_file": "stages/finetuning.json",
                "priority": 2,
                "auto_switch_conditions": [{"epoch": switch_at, "condition": "warmed_up"}],
            },
        },
        "default_stage": "pretraining",
        "switch_strategy": {"mode": "auto", "check_interval": 1},
    }
    (repo / "stage_config.yaml").write_text(yaml.safe_dump(stage_config), encoding="utf-8")
    mixtures = {"pretraining": {"iris": 0.5, "wine": 0.5}, "finetuning": {"wine": 1.0}}
    for stage, weights in mixtures.items():
        config = {
            "meta": {"stage": stage},
            "dataset_index": [
                {"name": n, "path": str(stores / n), "stage_weight": w} for n, w in weights.items()
            ],
        }
        (repo / "stages" / f"{stage}.json").write_text(json.dumps(config), encoding="utf-8")
    return repo


def staged_config(tmp_path: Path, stores: Path, name: str, **training: Any) -> Path:
    raw = config_data({"train": [], "val": []}, tmp_path / name, **training)
    del raw["data"]
    raw["release"] = {"path": str(make_release(tmp_path / f"{name}-repo", stores, 2))}
    return write_config(tmp_path / f"{name}.yaml", raw)


def test_auto_stage_switches_the_data_and_every_tracker_sees_it(
    tmp_path: Path, stores: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAINING_STAGE", "auto")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    path = staged_config(tmp_path, stores, "run", epochs=4)
    config, _ = load_training_config(
        path, ["wandb.enabled=true", "tracking.tensorboard=true", "tracking.mlflow=true"]
    )
    printed: list[str] = []
    result = train(config, resume=False, echo=printed.append)

    assert result.stages == ["pretraining", "finetuning"]
    assert any("🔄 阶段切换: pretraining → finetuning (epoch 2" in line for line in printed)
    out = result.output_dir
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    switch = [line for line in lines if line.get("event") == "stage_switch"]
    assert len(switch) == 1
    assert switch[0]["from_stage"] == "pretraining" and switch[0]["to_stage"] == "finetuning"
    assert switch[0]["trigger"] == "auto" and switch[0]["metadata"]["epoch"] == 2
    assert {"loss", "accuracy"} <= set(switch[0]["metadata"])
    # The boundary in the metrics: stage_index 0 for two epochs, then 1; and after the
    # switch the training metrics are wine's alone.
    stages = [
        line["metrics"]["stage_index"] for line in lines if "stage_index" in line.get("metrics", {})
    ]
    assert stages == [0, 0, 1, 1]
    after = [
        line["metrics"] for line in lines if "metrics" in line and line["step"] > switch_step(lines)
    ]
    assert not any(key.startswith("train_iris") for m in after for key in m)
    # The release's own event log has the same switch (seed 000's shape).
    repo_events = (tmp_path / "run-repo" / "stage_events.jsonl").read_text()
    assert '"to_stage": "finetuning"' in repo_events
    # Every tracker recorded the run's metrics.
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(out / "tensorboard"))
    board.Reload()
    assert "eval_overall_accuracy" in board.Tags()["scalars"]
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns' / 'mlflow.db'}")
    run_id = next(out.glob("mlflow_run_id*")).read_text().strip()
    history = client.get_metric_history(run_id, "final_eval_overall_accuracy")
    assert history and history[-1].value == pytest.approx(
        result.final["final_eval_overall_accuracy"]
    )
    logged = {k for row in wandb_history(out).values() for k in row}
    assert "train_overall_accuracy" in logged and "best_model_step" in logged


def switch_step(lines: list[dict[str, Any]]) -> int:
    """The step of the last log before the switch (the epoch's end)."""
    index = next(i for i, line in enumerate(lines) if line.get("event") == "stage_switch")
    return max(line["step"] for line in lines[:index] if "step" in line)


def test_a_run_resumed_after_the_switch_trains_on_the_new_stage(
    tmp_path: Path, stores: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAINING_STAGE", "auto")
    # A constant learning rate: the run is cut by asking for fewer epochs, which would
    # otherwise change a schedule that spans all of them.
    whole_path = staged_config(tmp_path, stores, "whole", epochs=4, scheduler="constant")
    whole, _ = load_training_config(whole_path)
    expected = train(whole, resume=False, echo=lambda _t: None)

    cut_path = staged_config(tmp_path, stores, "cut", epochs=4, scheduler="constant")
    first, _ = load_training_config(cut_path, ["training.epochs=3"])
    train(first, resume=False, echo=lambda _t: None)  # ends after the switch, epoch 3
    rest, _ = load_training_config(cut_path)
    printed: list[str] = []
    resumed = train(rest, resume=True, echo=printed.append)
    assert any("resumed from" in line for line in printed)
    assert resumed.stages == ["pretraining", "finetuning"]
    assert resumed.steps == expected.steps
    assert resumed.final == pytest.approx(expected.final)
