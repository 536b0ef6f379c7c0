"""Regression tests for the defects a review of the trainer found (issue 5): each test
names the behaviour it pins (dtype and non-finite checks, located label errors, the
learning-rate schedule across stages, exact resume across a stage switch and under DDP,
--no-resume, changed settings, DeepSpeed hand-over, DDP evaluation, A/B variants,
FORCE_DATASET_CONFIG, eval subsets)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from stagewise.config.training import TrainConfig, load_training_config
from stagewise.errors import ConfigError, DataError, StagewiseError
from stagewise.pipeline.tasks.data import prepare_store
from stagewise.train import checkpoint as checkpoint_module
from stagewise.train.data import read_jsonl, read_store
from stagewise.train.recipe import train
from tests.train.conftest import config_data, dataset_records, write_config, write_jsonl


def _config(files: list[str], **datasets: Any) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "model": {"num_labels": 3},
            "datasets": {"dataset_configs": datasets or {"a": {"num_classes": 3}}},
            "data": {"train_jsonl_list": files},
        }
    )


def _logged(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _metric_rows(out: Path, name: str) -> list[tuple[int, float]]:
    return [
        (row["step"], row["metrics"][name])
        for row in _logged(out)
        if name in row.get("metrics", {})
    ]


# ------------------------------------------------------------------------- data checks


def test_float_features_after_an_all_integer_first_record_are_kept(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "a.jsonl",
        [
            {"features": [1, 2, 3], "label": 0, "dataset_name": "a"},
            {"features": [1.5, 2.5, 3.5], "label": 1, "dataset_name": "a"},
        ],
    )
    split = read_jsonl([str(path)], _config([str(path)]), "training")
    assert split.tables["a"].inputs["features"][1].tolist() == [1.5, 2.5, 3.5]


def test_non_finite_features_are_a_located_error(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(
        '{"features": [1.0, 2.0, 3.0], "label": 0, "dataset_name": "a"}\n'
        '{"features": [NaN, 2.0, Infinity], "label": 1, "dataset_name": "a"}\n',
        encoding="utf-8",
    )
    with pytest.raises(DataError) as caught:
        read_jsonl([str(path)], _config([str(path)]), "training")
    assert any(p.line == 2 for p in caught.value.problems)


def _store(tmp_path: Path, name: str, rows: list[dict[str, Any]]) -> Path:
    raw = write_jsonl(tmp_path / "raw" / f"{name}.jsonl", rows)
    prepare_store({"rows": str(raw)}, str(tmp_path / name), split_column="split")
    return tmp_path / name


def test_store_with_fractional_labels_is_a_data_error(tmp_path: Path) -> None:
    rows = [
        {"id": i, "features": [float(i), 1.0], "label": 1.5 if i == 3 else i % 2, "split": "train"}
        for i in range(6)
    ]
    store = _store(tmp_path, "a", rows)
    config = _config(["unused.jsonl"], a={"num_classes": 2})
    with pytest.raises(DataError):
        read_store(str(store), config, split="train", task="classification", name="a")


def _release(repo: Path, stages: dict[str, dict[str, tuple[str, float]]], switch_at: int) -> Path:
    """A release repo: stages in order, each {dataset: (store path, weight)}; the second
    stage starts at epoch ``switch_at``."""
    (repo / "stages").mkdir(parents=True)
    names = list(stages)
    config: dict[str, Any] = {"stages": {}, "default_stage": names[0]}
    for i, name in enumerate(names):
        epoch = 0 if i == 0 else switch_at
        config["stages"][name] = {
            "config_file": f"stages/{name}.json",
            "priority": i + 1,
            "auto_switch_conditions": [{"epoch": epoch, "condition": f"at_{epoch}"}],
        }
        index = [
            {"name": n, "path": str(p), "stage_weight": w} for n, (p, w) in stages[name].items()
        ]
        (repo / "stages" / f"{name}.json").write_text(
            json.dumps({"meta": {"stage": name}, "dataset_index": index}), encoding="utf-8"
        )
    config["switch_strategy"] = {"mode": "auto", "check_interval": 1}
    import yaml

    (repo / "stage_config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return repo


def _sklearn_store(root: Path, name: str, bad_test_label: int | None = None) -> Path:
    train_rows, test_rows = dataset_records(name)
    rows = [{**r, "split": "train"} for r in train_rows]
    test = [{**r, "split": "test"} for r in test_rows]
    if bad_test_label is not None:
        test[0]["label"] = bad_test_label
    return _store(root, name, rows + test)


def test_out_of_range_labels_in_a_release_eval_split_are_reported(tmp_path: Path) -> None:
    iris = _sklearn_store(tmp_path / "stores", "iris", bad_test_label=7)
    repo = _release(tmp_path / "repo", {"only": {"iris": (iris, 1.0)}}, 1)
    raw = config_data({"train": [], "val": []}, tmp_path / "out", epochs=1)
    del raw["data"]
    raw["datasets"]["dataset_configs"] = {"iris": {"num_classes": 3}}
    raw["release"] = {"path": str(repo), "stage": "only"}
    config, _ = load_training_config(write_config(tmp_path / "c.yaml", raw))
    with pytest.raises(DataError):
        train(config, resume=False, echo=lambda _t: None)


def test_tracking_a_dataset_that_has_no_eval_data_is_an_error(
    tmp_path: Path, data_files: dict[str, list[str]]
) -> None:
    iris_only = {"train": data_files["train"][:1], "val": data_files["val"][:1]}
    raw = config_data(
        iris_only,
        tmp_path / "out",
        epochs=1,
        best_model_tracking={"enabled": True, "metric": "wine_accuracy", "mode": "max"},
    )
    config, _ = load_training_config(write_config(tmp_path / "c.yaml", raw))
    try:
        result = train(config, resume=False, echo=lambda _t: None)
    except (ConfigError, DataError):
        return
    pytest.fail(f"trained with no best model at all: best={result.best}")


def test_a_dataset_with_eval_data_only_is_reported(
    tmp_path: Path, data_files: dict[str, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    files = {"train": data_files["train"][:1], "val": data_files["val"]}  # wine: val only
    raw = config_data(files, tmp_path / "out", epochs=1)
    config, _ = load_training_config(write_config(tmp_path / "c.yaml", raw))
    printed: list[str] = []
    try:
        train(config, resume=False, echo=printed.append)
    except (ConfigError, DataError):
        return
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("wine" in m for m in warned), "wine was evaluated untrained, without a word"


# ----------------------------------------------------------------- staged training, resume


@pytest.fixture(scope="module")
def sk_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("review-stores")
    return {name: _sklearn_store(root, name) for name in ("iris", "wine")}


def _staged(
    tmp_path: Path,
    name: str,
    stages: dict[str, dict[str, tuple[Path, float]]],
    switch_at: int,
    overrides: tuple[str, ...] = (),
    **training: Any,
) -> TrainConfig:
    raw = config_data({"train": [], "val": []}, tmp_path / name, **training)
    del raw["data"]
    raw["release"] = {
        "path": str(_release(tmp_path / f"{name}-repo", stages, switch_at)),
        "stage": "auto",
    }
    config, _ = load_training_config(write_config(tmp_path / f"{name}.yaml", raw), list(overrides))
    return config


class _Crash(Exception):
    pass


def _train_until(monkeypatch: pytest.MonkeyPatch, config: TrainConfig, stop: Any) -> None:
    """Train until the first checkpoint whose state satisfies ``stop`` is written, then
    'crash' (as a kill right after that checkpoint would)."""
    real = checkpoint_module.save

    def save(folder: Path, **kwargs: Any) -> Path:
        written = real(folder, **kwargs)
        if stop(kwargs["state"]):
            raise _Crash(str(folder))
        return written

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_module, "save", save)
        with pytest.raises(_Crash):
            train(config, resume=True, echo=lambda _t: None)


def test_the_lr_schedule_spans_the_steps_of_every_stage(
    tmp_path: Path, sk_stores: dict[str, Path]
) -> None:
    iris, wine = sk_stores["iris"], sk_stores["wine"]
    stages = {"small": {"iris": (iris, 1.0)}, "large": {"iris": (iris, 0.5), "wine": (wine, 0.5)}}
    config = _staged(tmp_path, "run", stages, 1, epochs=3)
    result = train(config, resume=False, echo=lambda _t: None)
    assert result.stages == ["small", "large"]
    early = [
        (step, lr) for step, lr in _metric_rows(result.output_dir, "lr") if step < result.steps
    ]
    assert early and all(lr > 0 for _, lr in early), early


def test_a_run_resumed_after_a_switch_matches_the_uninterrupted_run(
    tmp_path: Path, sk_stores: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    iris, wine = sk_stores["iris"], sk_stores["wine"]
    stages = {"pre": {"iris": (iris, 0.5), "wine": (wine, 0.5)}, "fine": {"wine": (wine, 1.0)}}
    whole = train(
        _staged(tmp_path, "whole", stages, 2, epochs=4), resume=False, echo=lambda _t: None
    )
    cut = _staged(tmp_path, "cut", stages, 2, epochs=4)
    _train_until(monkeypatch, cut, lambda state: state["epoch"] == 3)
    resumed = train(cut, resume=True, echo=lambda _t: None)
    assert resumed.stages == whole.stages == ["pre", "fine"]
    last = {
        name: (_metric_rows(whole.output_dir, name)[-1], _metric_rows(resumed.output_dir, name)[-1])
        for name in ("lr", "eval_overall_samples", "eval_overall_accuracy")
    }
    assert all(a == b for a, b in last.values()), last
    assert resumed.best == whole.best
    assert resumed.final == pytest.approx(whole.final)


def test_the_controller_sees_the_same_accuracy_after_a_resume(
    tmp_path: Path, sk_stores: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    iris, wine = sk_stores["iris"], sk_stores["wine"]
    stages = {"pre": {"iris": (iris, 0.5), "wine": (wine, 0.5)}, "fine": {"wine": (wine, 1.0)}}
    # pre: 224 samples -> 14 steps of 16; eval_every 10: one evaluation mid-epoch 0.
    settings = {"epochs": 2, "eval_every": 10, "scheduler": "constant"}
    whole = train(
        _staged(tmp_path, "whole", stages, 1, **settings), resume=False, echo=lambda _t: None
    )
    cut = _staged(tmp_path, "cut", stages, 1, **settings)
    _train_until(monkeypatch, cut, lambda state: state["step"] == 10)
    resumed = train(cut, resume=True, echo=lambda _t: None)

    def switch(out: Path) -> dict[str, Any]:
        return next(r for r in _logged(out) if r.get("event") == "stage_switch")["metadata"]

    assert switch(resumed.output_dir) == switch(whole.output_dir)


def test_a_run_killed_between_the_switch_and_its_checkpoint_still_switches(
    tmp_path: Path, sk_stores: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from stagewise.train import recipe

    iris, wine = sk_stores["iris"], sk_stores["wine"]
    stages = {"pre": {"iris": (iris, 0.5), "wine": (wine, 0.5)}, "fine": {"wine": (wine, 1.0)}}
    config = _staged(tmp_path, "run", stages, 2, epochs=4, scheduler="constant")
    real = recipe.load_data

    def load_data(config: Any, task: str, stage: str | None = None) -> Any:
        if stage == "fine":  # the new stage's data is being read when the kill comes
            raise _Crash(stage)
        return real(config, task, stage)

    with monkeypatch.context() as patch:
        patch.setattr(recipe, "load_data", load_data)
        with pytest.raises(_Crash):
            train(config, resume=True, echo=lambda _t: None)
    resumed = train(config, resume=True, echo=lambda _t: None)
    assert resumed.stages == ["pre", "fine"]


# ------------------------------------------------------------------- checkpoints, resume


def _plain_run(
    tmp_path: Path, data_files: dict[str, list[str]], name: str, out: str, **training: Any
) -> TrainConfig:
    raw = config_data(data_files, tmp_path / out, **training)
    config, _ = load_training_config(write_config(tmp_path / f"{name}.yaml", raw))
    return config


def test_no_resume_does_not_leave_an_old_run_to_be_resumed(
    tmp_path: Path, data_files: dict[str, list[str]]
) -> None:
    old = _plain_run(tmp_path, data_files, "old", "out", epochs=2, scheduler="constant")
    train(old, resume=False, echo=lambda _t: None)
    new = _plain_run(
        tmp_path, data_files, "new", "out", epochs=1, checkpoint_every=5, scheduler="constant"
    )
    result = train(new, resume=False, echo=lambda _t: None)
    newest = checkpoint_module.checkpoints(tmp_path / "out" / "checkpoints")[-1]
    state = json.loads((newest / "state.json").read_text())
    assert state["step"] == result.steps, f"a resume would continue {newest.name} (old run)"


def test_a_changed_learning_rate_is_not_silently_ignored_on_resume(
    tmp_path: Path, data_files: dict[str, list[str]]
) -> None:
    first = _plain_run(tmp_path, data_files, "a", "out", epochs=1, lr=0.01, scheduler="constant")
    train(first, resume=False, echo=lambda _t: None)
    second = _plain_run(tmp_path, data_files, "b", "out", epochs=2, lr=0.5, scheduler="constant")
    try:
        result = train(second, resume=True, echo=lambda _t: None)
    except ConfigError:
        return  # refusing the mismatched checkpoint is a fix too
    lrs = [lr for step, lr in _metric_rows(result.output_dir, "lr") if step > 16]
    assert lrs and all(lr == pytest.approx(0.5) for lr in lrs), lrs


# ------------------------------------------------------------------------------ config


def test_strategy_deepspeed_hands_the_model_to_deepspeed(
    tmp_path: Path, data_files: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from stagewise.train import distributed

    class _Reached(Exception):
        pass

    def engine(model: Any, settings: Any) -> Any:
        raise _Reached

    monkeypatch.setattr(distributed, "deepspeed_engine", engine)
    ds = tmp_path / "ds_s2.json"
    ds.write_text('{"zero_optimization": {"stage": 2}}', encoding="utf-8")
    config = _plain_run(
        tmp_path, data_files, "ds", "out", epochs=1, strategy="deepspeed",
        deepspeed_config=str(ds),
    )  # fmt: skip
    with pytest.raises(_Reached):
        train(config, resume=False, echo=lambda _t: None)


# --------------------------------------------------------------------------- distributed

_TORCHRUN_LIMIT = 90  # a healthy two-process run here takes ~15 s


def _torchrun(args: list[str], cwd: Path, limit: int = _TORCHRUN_LIMIT) -> tuple[int, str]:
    """Two gloo processes. A hang is ended with SIGTERM to torchrun (which stops its
    workers: they run in sessions of their own), then SIGKILL to any worker left, found by
    a marker in its environment."""
    import os
    import signal
    import subprocess
    import sys
    import uuid

    marker = uuid.uuid4().hex
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    log = cwd / "torchrun.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*command, *args], stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=str(Path(__file__).resolve().parents[2]),
            env={**os.environ, "REVIEW_TORCHRUN_MARKER": marker},
        )  # fmt: skip
        try:
            code = process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            code = -999  # hung
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        _kill_marked(marker)
    return code, log.read_text(errors="replace")[-3000:]


def _kill_marked(marker: str) -> None:
    import os
    import signal

    needle = f"REVIEW_TORCHRUN_MARKER={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def _ddp_config(tmp_path: Path, files: dict[str, list[str]], name: str, **training: Any) -> Path:
    raw = config_data(files, tmp_path / name, drop_last=True, **training)
    raw["model"]["options"] = {"hidden": 32, "dropout": 0.0}
    return write_config(tmp_path / f"{name}.yaml", raw)


def test_ddp_evaluation_with_fewer_batches_than_ranks_finishes(tmp_path: Path) -> None:
    train_rows, test_rows = dataset_records("iris")
    files = {
        "train": [str(write_jsonl(tmp_path / "iris_train.jsonl", train_rows))],
        "val": [str(write_jsonl(tmp_path / "iris_test.jsonl", test_rows))],
    }
    # 38 eval records, one eval batch (default eval batch: 4 x 16 = 64) for two ranks.
    path = _ddp_config(tmp_path, files, "one-batch", epochs=1, batch_size=16)
    text = path.read_text().replace("    wine:\n", "    unused_wine:\n")
    path.write_text(text)
    code, log = _torchrun(["-m", "stagewise", "train", str(path)], tmp_path)
    assert code == 0, log


def test_ddp_resume_reports_the_same_training_metrics(
    tmp_path: Path, data_files: dict[str, list[str]]
) -> None:
    path = _ddp_config(
        tmp_path, data_files, "ddp", epochs=1, batch_size=16, checkpoint_every=2,
        log_every=3, keep_checkpoints=50, scheduler="constant",
    )  # fmt: skip
    code, log = _torchrun(["-m", "stagewise", "train", str(path)], tmp_path)
    assert code == 0, log
    out = tmp_path / "ddp"
    whole = {step: row for step, row in _metric_rows(out, "train_overall_accuracy")}
    # "Kill" the run right after its step-2 checkpoint: keep only what existed then.
    for folder in checkpoint_module.checkpoints(out / "checkpoints"):
        if json.loads((folder / "state.json").read_text())["step"] > 2:
            shutil.rmtree(folder)
    for stale in ("best_model", "models", "result.json", "metrics.jsonl"):
        target = out / stale
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    code, log = _torchrun(["-m", "stagewise", "train", str(path)], tmp_path)
    assert code == 0, log
    resumed = {step: row for step, row in _metric_rows(out, "train_overall_accuracy")}
    assert resumed[3] == pytest.approx(whole[3], abs=1e-9), (whole, resumed)


# ----------------------------------------------------------------------- A/B variants


def _ab_release(repo: Path, stores: dict[str, Path]) -> Path:
    """ab_testing with variant_a (iris 0.5, wine 0.5) and variant_b (iris 0.2, wine 0.8)."""
    import yaml

    (repo / "stages").mkdir(parents=True)
    for variant, wine in (("variant_a", 0.5), ("variant_b", 0.8)):
        index = [
            {"name": "iris", "path": str(stores["iris"]), "stage_weight": round(1 - wine, 1)},
            {"name": "wine", "path": str(stores["wine"]), "stage_weight": wine},
        ]
        (repo / "stages" / f"{variant}.json").write_text(
            json.dumps({"meta": {"stage": "ab_testing"}, "dataset_index": index}),
            encoding="utf-8",
        )
    config = {
        "stages": {
            "ab_testing": {
                "variants": {
                    "variant_a": {"config_file": "stages/variant_a.json", "weight": 0.5},
                    "variant_b": {"config_file": "stages/variant_b.json", "weight": 0.5},
                }
            }
        },
        "default_stage": "ab_testing",
    }
    (repo / "stage_config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return repo


def test_ab_variant_from_the_environment_decides_the_training_data(
    tmp_path: Path, sk_stores: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAINING_STAGE", "ab_testing")
    monkeypatch.setenv("AB_VARIANT", "variant_b")
    raw = config_data({"train": [], "val": []}, tmp_path / "out", epochs=1)
    del raw["data"]
    raw["release"] = {"path": str(_ab_release(tmp_path / "repo", sk_stores))}
    config, _ = load_training_config(write_config(tmp_path / "c.yaml", raw))
    train(config, resume=False, echo=lambda _t: None)
    events = (tmp_path / "repo" / "stage_events.jsonl").read_text().splitlines()
    loaded = next(json.loads(e) for e in events if '"data_loading"' in e)  # the trainer's
    weights = {d["name"]: d["weight"] for d in loaded["datasets_loaded"]}
    assert weights["wine"] == pytest.approx(0.8), weights  # variant_b's mixture


def test_force_dataset_config_decides_the_training_data(
    tmp_path: Path, sk_stores: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    iris, wine = sk_stores["iris"], sk_stores["wine"]
    repo = _release(tmp_path / "repo", {"pre": {"iris": (iris, 0.5), "wine": (wine, 0.5)}}, 1)
    debug = {"meta": {"stage": "pre"}, "dataset_index": [
        {"name": "wine", "path": str(wine), "stage_weight": 1.0}
    ]}  # fmt: skip
    (repo / "stages" / "debug.json").write_text(json.dumps(debug), encoding="utf-8")
    monkeypatch.setenv("TRAINING_STAGE", "pre")
    monkeypatch.setenv("FORCE_DATASET_CONFIG", str(repo / "stages" / "debug.json"))
    raw = config_data({"train": [], "val": []}, tmp_path / "out", epochs=1)
    del raw["data"]
    raw["release"] = {"path": str(repo)}
    config, _ = load_training_config(write_config(tmp_path / "c.yaml", raw))
    train(config, resume=False, echo=lambda _t: None)
    events = (repo / "stage_events.jsonl").read_text().splitlines()
    loaded = next(json.loads(e) for e in events if '"data_loading"' in e)  # the trainer's
    assert [d["name"] for d in loaded["datasets_loaded"]] == ["wine"], loaded


# ------------------------------------------------------------------------ lesser findings


def test_eval_subsets_of_datasets_sharing_a_name_prefix_differ() -> None:
    import numpy as np

    from stagewise.train.data import Split, Table, eval_subset

    names = ("imagenet_a", "imagenet_b")
    tables = {n: Table(n, {"features": np.zeros((100, 1))}, np.arange(100)) for n in names}
    config = _config(
        ["unused.jsonl"], **{n: {"num_classes": 100, "eval_ratio": 0.1} for n in names}
    )
    subset = eval_subset(Split(tables), config, seed=0)
    a, b = (subset.tables[n].targets.tolist() for n in names)
    assert a != b


def test_jsonl_records_in_a_forecasting_run_are_a_clear_error(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "a.jsonl", [{"x": [[[1.0]], [[2.0]]], "label": 1.5, "dataset_name": "a"}]
    )
    config = TrainConfig.model_validate(
        {
            "model": {"num_labels": 1, "name": "timeseries"},
            "datasets": {"dataset_configs": {"a": {}}},
            "data": {"train_jsonl_list": [str(path)]},
        }
    )
    with pytest.raises(StagewiseError):
        read_jsonl([str(path)], config, "training")
