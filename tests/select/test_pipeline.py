"""examples/llm-selection/pipeline.yaml end to end on the tiny model: the four stages as
one pipeline, re-run from the cache, and a changed percentage re-running only what
follows from it."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

from stagewise.pipeline.runner import RunOptions, run_pipeline
from stagewise.pipeline.spec import load_pipeline
from stagewise.store.runs import RunRecord, RunStore

EXAMPLE = Path(__file__).parents[2] / "examples" / "llm-selection"


def run(tmp_path: Path, *overrides: str, here: Path = EXAMPLE) -> RunRecord:
    every = [
        f"here={here}",
        f"data={tmp_path / 'data'}",
        "tasks.base-model.parameters.steps=20",
        *overrides,
    ]
    loaded = load_pipeline(str(here / "pipeline.yaml"), every)
    assert loaded.warnings == []
    options = RunOptions(outputs=str(tmp_path / "outputs"), workers=1)
    return run_pipeline(loaded.plan, overrides=every, options=options)


def states(record: RunRecord) -> dict[str, str]:
    return {t.name: t.state for t in RunStore().tasks(record.id)}


def test_the_four_stages_run_as_one_pipeline(tmp_path: Path) -> None:
    made = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE / "make_data.py"),
            str(tmp_path / "data"),
            "--clean",
            "24",
            "--targets",
            "8",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    first = run(tmp_path)
    assert first.state == "succeeded", first.error
    folder = Path(first.output_dir)
    assert folder.parents[1].name == "llm-selection"  # seed 001's outputs/<name>/<date>/<time>-...
    assert (folder / "convert" / "selector_model" / "quality_gate.safetensors").is_file()
    weights = folder / "warmup" / "gates" / "full_rank_weights.pt"
    assert weights.is_file()
    router = folder / "score" / "statistics" / "router_data" / "docs_router_data.pt"
    import torch

    data = torch.load(router, weights_only=True)
    assert data["num_samples"] == 48 and data["quality_gates"].shape[:2] == (48, 4)
    selected = (folder / "pick" / "selection" / "selected_data.jsonl").read_text().splitlines()
    assert len(selected) == math.ceil(0.25 * 48)
    assert set(json.loads(selected[0])) == {"dataset", "id", "scores", "messages"}
    assert (
        folder / "finetune" / "adapters" / "checkpoint-final" / "adapter_model.safetensors"
    ).is_file()

    again = run(tmp_path)
    assert set(states(again).values()) == {"cached"}, states(again)
    third = run(tmp_path, "selection_percentage=0.5")
    assert states(third) == {
        "base-model": "cached",
        "convert": "cached",
        "warmup": "cached",
        "score": "cached",
        "pick": "succeeded",
        "finetune": "succeeded",
    }
    wider = Path(third.output_dir) / "pick" / "selection" / "selected_data.jsonl"
    assert len(wider.read_text().splitlines()) == 24


def test_an_edited_stage_config_reruns_its_stage(tmp_path: Path) -> None:
    here = tmp_path / "example"
    shutil.copytree(EXAMPLE, here)
    subprocess.run(
        [
            sys.executable,
            str(here / "make_data.py"),
            str(tmp_path / "data"),
            "--clean",
            "8",
            "--targets",
            "4",
        ],
        capture_output=True,
        check=True,
    )
    assert run(tmp_path, here=here).state == "succeeded"
    config = here / "stage_2_selection.yaml"
    config.write_text(config.read_text().replace("batch_size: 32", "batch_size: 8"))
    again = run(tmp_path, here=here)
    assert states(again) == {
        "base-model": "cached",
        "convert": "cached",
        "warmup": "cached",
        "score": "succeeded",
        "pick": "succeeded",
        "finetune": "succeeded",
    }
