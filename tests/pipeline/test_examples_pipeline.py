"""examples/three-stage end to end through the Python API: seed 002's incremental-learning
pipeline (built-in task types, /mnt/user mounted) run, re-run from the cache, and (the
seed's loop) run again on new data. Seed 001's stages: tests/select/test_pipeline.py."""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from stagewise.errors import PipelineError
from stagewise.pipeline.runner import RunOptions, make_executor, run_pipeline, start_run
from stagewise.pipeline.spec import load_pipeline
from stagewise.store.runs import RunRecord, RunStore

EXAMPLE = Path(__file__).parents[2] / "examples" / "three-stage"


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the example folder as the working directory, with the raw data under
    work/."""
    folder = tmp_path / "three-stage"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(folder)
    make_data(folder).write_tables(tmp_path / "work" / "user", "wine", 1, 0)
    return folder


def make_data(folder: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("three_stage_make_data", folder / "make_data.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(name: str, tmp_path: Path, overrides: Sequence[str] = (), **options: Any) -> RunRecord:
    loaded = load_pipeline(name, list(overrides))
    assert loaded.warnings == []
    options.setdefault("outputs", str(tmp_path / "outputs"))
    options.setdefault("workers", 1)  # both pipelines are chains
    return run_pipeline(loaded.plan, overrides=list(overrides), options=RunOptions(**options))


def states(record: RunRecord) -> dict[str, str]:
    return {t.name: t.state for t in RunStore().tasks(record.id)}


def test_the_incremental_learning_yaml_is_the_seeds_but_for_the_images() -> None:
    data = yaml.safe_load((EXAMPLE / "incremental-learning.yaml").read_text())
    assert data["apiVersion"] == "train-platform/v1"
    assert [t["name"] for t in data["spec"]["tasks"]] == [
        "data-preparation",
        "model-training",
        "model-evaluation",
        "model-deployment",
    ]
    assert all("function" not in t for t in data["spec"]["tasks"])  # the built-in types run
    assert data["spec"]["tasks"][1]["resources"] == {"cpu": "8", "memory": "16Gi", "gpu": "1"}
    assert data["spec"]["parameters"] == {
        "learning_rate": 0.001,
        "batch_size": 32,
        "epochs": 100,
        "incremental_ratio": 0.1,
    }


def test_incremental_learning_runs_caches_and_learns_from_new_data(
    tmp_path: Path, example: Path
) -> None:
    user = tmp_path / "work" / "user"
    mounts = {"/mnt/user": str(user)}
    # The training task asks for 8 CPUs and a GPU: refused unless fitted, on a machine
    # that has less.
    plan = load_pipeline("incremental-learning.yaml").plan
    executor = make_executor(RunOptions())
    if not plan.tasks["model-training"].request.fits(executor.capacity):
        with pytest.raises(PipelineError, match="'model-training' asks for"):
            start_run(plan, options=RunOptions(mounts=mounts), executor=executor)
    first = run("incremental-learning.yaml", tmp_path, mounts=mounts, fit_resources=True)
    assert first.state == "succeeded", first.error
    metrics = json.loads((user / "results" / "evaluation" / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.8 and metrics["n"] == 35
    deployed = json.loads((user / "models" / "deployed" / "deployment.json").read_text())
    assert deployed["run_id"] == first.id
    assert deployed["source"] == str(user / "models" / "incremental")
    outputs = RunStore().artifacts_of(first.id)
    assert outputs[("model-deployment", "deployed_model")].kind == "model"
    assert outputs[("data-preparation", "processed_data")].uri == str(user / "data" / "processed")

    again = run("incremental-learning.yaml", tmp_path, mounts=mounts, fit_resources=True)
    assert again.state == "succeeded" and set(states(again).values()) == {"cached"}, states(again)

    # Seed 002's loop: the deployed model becomes the base, new data arrives.
    shutil.copytree(user / "models" / "deployed", user / "models" / "base")
    make_data(example).write_tables(user, "wine", 2, 0)
    third = run("incremental-learning.yaml", tmp_path, mounts=mounts, fit_resources=True)
    assert third.state == "succeeded", third.error
    assert set(states(third).values()) == {"succeeded"}
    model = json.loads((user / "models" / "incremental" / "model.json").read_text())
    assert model["base_model"] == str(user / "models" / "base")
    assert model["epochs_run"] == 10  # incremental_ratio 0.1 of 100 epochs


def test_a_failed_tasks_event_names_the_error_not_its_hint(tmp_path: Path, example: Path) -> None:
    events: list[tuple[str, str, dict[str, Any]]] = []
    loaded = load_pipeline("incremental-learning.yaml")
    options = RunOptions(
        mounts={"/mnt/user": str(tmp_path / "absent")},
        fit_resources=True,
        outputs=str(tmp_path / "o"),
    )
    record = run_pipeline(loaded.plan, options=options, listener=lambda *e: events.append(e))
    assert record.state == "failed"
    failed = [data for name, task, data in events if name == "task_failed"]
    assert "has no readable table" in failed[0]["error"]
