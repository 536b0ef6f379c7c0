"""The trackers with the real libraries: metrics.jsonl, TensorBoard event files, a W&B
offline run read back from its .wandb file, and an MLflow run in a local SQLite store.

One module-scoped run logs with all four on, then resumes in the same folder (ending in
an exception, so it closes as failed); the tests read what it left.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stagewise.config.training import TrainConfig
from stagewise.train.trackers import (
    MLFLOW_ID_FILE,
    WANDB_ID_FILE,
    TrackerError,
    Trackers,
    metric_scope,
    open_trackers,
)

DATASETS = ("wine", "iris")
STAGE_SWITCH = {
    "timestamp": "2025-09-23 14:30:00",
    "event": "stage_switch",
    "from_stage": "pretraining",
    "to_stage": "finetuning",
    "trigger": "auto",
    "condition": "epoch >= 1",
    "metadata": {"epoch": 1, "loss": 0.08, "accuracy": 0.92},
}
SUMMARY = {"best_model_step": 20, "best_overall_accuracy": 0.75, "final_eval_wine_accuracy": 0.8}


def make_config(**sections: dict[str, Any]) -> TrainConfig:
    data: dict[str, Any] = {
        "model": {"num_labels": 3},
        "datasets": {"dataset_configs": {name: {"num_classes": 3} for name in DATASETS}},
        "data": {"train_jsonl_list": ["train.jsonl"]},
        "wandb": {"enabled": False},
        "tracking": {},
    }
    for key, value in sections.items():
        data[key].update(value)
    return TrainConfig.model_validate(data)


def train_metrics(step: int) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for i, name in enumerate(DATASETS):
        metrics[f"train_{name}_loss"] = 1.0 / step + i
        metrics[f"train_{name}_accuracy"] = step / 100 + i / 10
    metrics["train_overall_accuracy"] = step / 100
    metrics["train_overall_samples"] = 32 * step
    return metrics


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """W&B silent and offline, with its config, cache and data folders in a temp dir."""
    home = tmp_path_factory.mktemp("wandb-home")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("CONFIG", "CACHE", "DATA"):
            patch.setenv(f"WANDB_{name}_DIR", str(home / name.lower()))
        patch.setenv("WANDB_SILENT", "true")
        patch.setenv("WANDB_MODE", "offline")
        # What open_trackers would set for good: set here so the tests leave no trace.
        patch.setenv("WANDB_ERROR_REPORTING", "false")
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        patch.delenv("WANDB_API_KEY", raising=False)
        yield


# ----------------------------------------------------------------------------- readers


def wandb_records(run_dir: Path) -> list[Any]:
    """Every record of every offline run folder under ``run_dir/wandb``, oldest first.

    A ``.wandb`` file is a 7-byte header (``:W&B``, magic, version) and LevelDB-log
    records (crc32c, length, type) in 32 KiB blocks, each a protobuf ``Record``.
    """
    from wandb.proto.wandb_internal_pb2 import Record

    records = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        data = path.read_bytes()
        assert data[:4] == b":W&B"
        position, pending = 7, b""
        while position + 7 <= len(data):
            left = 32768 - position % 32768
            if left < 7:  # block trailer
                position += left
                continue
            length = int.from_bytes(data[position + 4 : position + 6], "little")
            kind = data[position + 6]
            if kind == 0:
                break
            pending += data[position + 7 : position + 7 + length]
            position += 7 + length
            if kind in (1, 4):  # FULL or LAST
                record = Record()
                record.ParseFromString(pending)
                records.append(record)
                pending = b""
    return records


def item_key(item: Any) -> str:
    return item.key or ".".join(item.nested_key)


def wandb_history(run_dir: Path) -> dict[int, dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    for record in wandb_records(run_dir):
        if record.WhichOneof("record_type") == "history":
            row = {item_key(i): json.loads(i.value_json) for i in record.history.item}
            rows.setdefault(row["_step"], {}).update(row)
    return rows


def wandb_summary(run_dir: Path) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for record in wandb_records(run_dir):
        if record.WhichOneof("record_type") == "summary":
            summary.update({item_key(i): json.loads(i.value_json) for i in record.summary.update})
    return summary


def jsonl(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- the run


@dataclass
class Logged:
    run_dir: Path
    first_ids: dict[str, str]
    resumed_ids: dict[str, str]


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory, wandb_env: None) -> Logged:
    run_dir = tmp_path_factory.mktemp("run")
    config = make_config(
        wandb={"enabled": True, "project": "stagewise-tests"},
        tracking={"tensorboard": True, "mlflow": True, "mlflow_experiment": "trackers"},
    )
    with open_trackers(config, run_dir, run_name="trackers-test") as trackers:
        for step in (10, 20, 30):
            trackers.log(train_metrics(step), step)
            if step == 20:
                trackers.log({"eval_wine_loss": 0.5, "eval_overall_accuracy": 0.75}, step)
        trackers.event("stage_switch", STAGE_SWITCH)
        trackers.summary(SUMMARY)
    first = {f: (run_dir / f).read_text().strip() for f in (WANDB_ID_FILE, MLFLOW_ID_FILE)}

    # Resumed from the checkpoint at step 20; the resumed run then fails.
    with (
        pytest.raises(RuntimeError, match="boom"),
        open_trackers(config, run_dir, run_name="trackers-test", resume_step=20) as trackers,
    ):
        trackers.log(train_metrics(40), 40)
        raise RuntimeError("boom")
    resumed = {f: (run_dir / f).read_text().strip() for f in (WANDB_ID_FILE, MLFLOW_ID_FILE)}
    return Logged(run_dir, first, resumed)


def test_jsonl_has_one_line_per_call_and_the_resume_appends(logged: Logged) -> None:
    lines = jsonl(logged.run_dir)
    assert [line.get("step") for line in lines] == [10, 20, 20, 30, None, None, 40]
    assert lines[0]["metrics"] == train_metrics(10)
    assert isinstance(lines[0]["metrics"]["train_overall_samples"], int)
    assert isinstance(lines[0]["time"], float)
    assert lines[4] == STAGE_SWITCH  # {"event": name, ...payload}
    assert lines[5] == {"summary": SUMMARY}
    assert lines[6]["metrics"] == train_metrics(40)


def test_tensorboard_holds_the_scalars_and_the_event(logged: Logged) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logged.run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    # purge_step=20 on resume: what the first run logged at 20 and 30 is dropped.
    loss = events.Scalars("train_wine_loss")
    assert [s.step for s in loss] == [10, 40]
    assert loss[0].value == pytest.approx(0.1)
    assert [s.value for s in events.Scalars("train_overall_samples")] == [320, 1280]
    tags = events.Tags()["tensors"]
    assert "events/stage_switch/text_summary" in tags
    assert "summary/text_summary" in tags


def test_tensorboard_keeps_the_event_text(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with open_trackers(make_config(tracking={"tensorboard": True}), tmp_path, run_name="t") as t:
        t.log({"train_overall_accuracy": 0.5}, 3)
        t.event("stage_switch", STAGE_SWITCH)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    (tensor,) = events.Tensors("events/stage_switch/text_summary")
    assert tensor.step == 3
    text = tensor.tensor_proto.string_val[0].decode()
    assert json.loads(text.removeprefix("```json\n").removesuffix("\n```")) == STAGE_SWITCH


def test_wandb_offline_run_holds_history_event_and_summary(logged: Logged) -> None:
    history = wandb_history(logged.run_dir)
    assert history[10]["train_wine_loss"] == pytest.approx(0.1)
    assert history[30]["train_overall_samples"] == 960
    assert history[20]["eval_overall_accuracy"] == 0.75
    assert history[20]["train_wine_accuracy"] == pytest.approx(0.2)
    assert history[40]["train_iris_accuracy"] == pytest.approx(0.5)
    assert json.loads(history[30]["events/stage_switch"]) == STAGE_SWITCH
    assert wandb_summary(logged.run_dir) | SUMMARY == wandb_summary(logged.run_dir)
    runs = [r.run for r in wandb_records(logged.run_dir) if r.WhichOneof("record_type") == "run"]
    assert {r.run_id for r in runs} == {logged.first_ids[WANDB_ID_FILE]}
    assert {r.project for r in runs} == {"stagewise-tests"}
    config = {item_key(i): json.loads(i.value_json) for i in runs[0].config.update}
    assert config["training"]["lr"] == 1e-3
    assert config["datasets"]["dataset_configs"]["wine"]["num_classes"] == 3


def test_mlflow_run_holds_metrics_params_and_event(logged: Logged) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{logged.run_dir / 'mlruns' / 'mlflow.db'}")
    run_id = logged.first_ids[MLFLOW_ID_FILE]
    history = client.get_metric_history(run_id, "train_wine_loss")
    assert [(m.step, m.value) for m in history] == [
        (10, pytest.approx(0.1)),
        (20, pytest.approx(0.05)),
        (30, pytest.approx(1 / 30)),
        (40, pytest.approx(0.025)),
    ]
    run = client.get_run(run_id)
    assert run.info.run_name == "trackers-test"
    assert run.info.status == "FAILED"  # the resumed run ended in an exception
    assert run.data.params["training.lr"] == "0.001"
    assert run.data.params["datasets.dataset_configs.iris.num_classes"] == "3"
    assert run.data.metrics["best_model_step"] == 20
    artifacts = client.list_artifacts(run_id, "events")
    assert [a.path.endswith("-stage_switch.json") for a in artifacts] == [True]
    assert (logged.run_dir / "mlruns" / "artifacts").is_dir()  # not ./mlruns in the cwd


def test_resume_continues_the_same_wandb_and_mlflow_runs(logged: Logged) -> None:
    assert logged.resumed_ids == logged.first_ids
    assert len(list(logged.run_dir.glob("wandb/offline-run-*"))) == 2  # one per process
    records = wandb_records(logged.run_dir)
    exits = [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"]
    assert exits == [0, 1]  # the resumed run ended in an exception


def test_log_dataset_metrics_false_keeps_them_out_of_wandb(tmp_path: Path, wandb_env: None) -> None:
    config = make_config(wandb={"enabled": True, "log_dataset_metrics": False})
    with open_trackers(config, tmp_path, run_name="overall-only") as trackers:
        trackers.log({**train_metrics(1), "learning_rate": 0.01}, 1)
        trackers.summary(SUMMARY)
    (row,) = wandb_history(tmp_path).values()
    assert {k for k in row if not k.startswith("_")} == {
        "train_overall_accuracy",
        "train_overall_samples",
        "learning_rate",
    }
    summary = wandb_summary(tmp_path)
    assert "final_eval_wine_accuracy" not in summary
    assert summary["best_model_step"] == 20
    assert jsonl(tmp_path)[0]["metrics"]["train_wine_loss"] == 1.0  # the JSONL keeps all


def test_metric_scope_follows_the_seed_names() -> None:
    assert metric_scope("train_food101_loss") == "dataset"
    assert metric_scope("final_eval_food_2k_accuracy") == "dataset"
    assert metric_scope("eval_overall_samples") == "overall"
    assert metric_scope("final_eval_overall_accuracy") == "overall"
    assert metric_scope("best_overall_accuracy") == "best"
    assert metric_scope("best_model_step") == "best"
    assert metric_scope("learning_rate") == "other"


def test_rank_one_writes_nothing(tmp_path: Path) -> None:
    config = make_config(wandb={"enabled": True}, tracking={"tensorboard": True, "mlflow": True})
    with open_trackers(config, tmp_path / "run", run_name="r", rank=1) as trackers:
        trackers.log(train_metrics(1), 1)
        trackers.event("stage_switch", STAGE_SWITCH)
        trackers.summary(SUMMARY)
    assert not (tmp_path / "run").exists()


def test_jsonl_only_closes_twice_and_refuses_logs_after_close(tmp_path: Path) -> None:
    import numpy as np
    import torch

    trackers = open_trackers(make_config(), tmp_path, run_name="plain")
    trackers.log(
        {"train_wine_loss": torch.tensor(0.5), "eval_wine_mape": float("nan"), "n": np.int64(3)}, 1
    )
    trackers.close()
    trackers.close()
    with pytest.raises(TrackerError, match="closed"):
        trackers.log({"train_wine_loss": 0.1}, 2)
    assert jsonl(tmp_path)[0]["metrics"] == {
        "train_wine_loss": 0.5,
        "eval_wine_mape": None,
        "n": 3,
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_jsonl_after_a_cut_line_starts_on_a_new_line(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "time": 1.0, "metrics": {}}\n{"ste')
    with open_trackers(make_config(), tmp_path, run_name="cut") as trackers:
        trackers.log({"train_wine_loss": 0.1}, 2)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert lines[1] == '{"ste'
    assert json.loads(lines[2])["step"] == 2


def test_missing_packages_fail_at_open_naming_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    monkeypatch.delenv("WANDB_ERROR_REPORTING", raising=False)
    monkeypatch.delenv("WANDB_SILENT", raising=False)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    config = make_config(wandb={"enabled": True}, tracking={"mlflow": True})
    with pytest.raises(TrackerError) as caught:
        open_trackers(config, tmp_path / "run", run_name="m")
    assert [p.key for p in caught.value.problems] == ["wandb.enabled", "tracking.mlflow"]
    assert caught.value.hint is not None and "stagewise[tracking]" in caught.value.hint
    assert not (tmp_path / "run").exists()
    # Set before the first import: MLflow's usage telemetry and wandb-core's crash reports
    # would otherwise go over the network, and W&B's warnings to the console.
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert os.environ["WANDB_ERROR_REPORTING"] == "false"
    assert os.environ["WANDB_SILENT"] == "true"


def test_empty_trackers_do_nothing() -> None:
    with Trackers() as trackers:
        trackers.log({"train_overall_accuracy": 1.0}, 1)


class Interrupted(Exception):
    pass


def test_a_training_run_that_fails_closes_its_mlflow_run_as_failed(
    tmp_path: Path, data_files: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    from stagewise.config.training import load_training_config
    from stagewise.train.recipe import train
    from tests.train.conftest import config_data, write_config

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    raw = config_data(data_files, tmp_path / "out", epochs=1)
    raw["tracking"] = {"mlflow": True}
    config, _ = load_training_config(write_config(tmp_path / "run.yaml", raw))

    def echo(line: str) -> None:  # the first training line comes after the trackers open
        if line.startswith("📊 TRAIN"):
            raise Interrupted

    with pytest.raises(Interrupted) as caught:
        train(config, resume=False, echo=echo)
    # Let go of train()'s frames and collect them here, so that nothing they hold can
    # warn in another test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        caught.value.__traceback__ = None
        del caught
        gc.collect()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'out' / 'mlruns' / 'mlflow.db'}")
    run = client.get_run((tmp_path / "out" / MLFLOW_ID_FILE).read_text().strip())
    assert run.info.status == "FAILED"
