"""The shipped example (what `make demo` runs) works end to end."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_bash

ROOT = Path(__file__).parents[2]


def test_quickstart_example_runs_end_to_end() -> None:
    result = run_bash(str(ROOT / "examples" / "quickstart" / "run.sh"))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "epoch  50: switched pretraining -> finetuning" in out
    assert "epoch 100: switched finetuning -> evaluation" in out
    assert "# Stage report" in out and '"event": "stage_switch"' in out


def test_data_example_runs_end_to_end(tmp_path) -> None:
    result = run_bash(str(ROOT / "examples" / "data" / "run.sh"), str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "cache hit:" in out and "ok: 8 files match their checksums" in out
    assert "epoch: 1,696 samples; shuffle: True" in out
    planned = "{'beijing': 1187, 'shanghai': 509} planned: {'beijing': 1187, 'shanghai': 509}"
    assert f"samples per dataset in one epoch: {planned}" in out
    events = (tmp_path / "repo" / "stage_events.jsonl").read_text()
    assert '"event": "data_loading"' in events and '"total_clips": 1696' in events


def test_three_stage_example_runs_end_to_end(tmp_path) -> None:
    result = run_bash(str(ROOT / "examples" / "three-stage" / "run.sh"), str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "test accuracy" in out and "for 10 epochs" in out
    assert out.count("succeeded") >= 4
    assert (tmp_path / "user" / "models" / "deployed").is_dir()


def test_llm_selection_example_runs_end_to_end(tmp_path) -> None:
    """Seed 001's recipe on the tiny model: six tasks, then all from the cache."""
    result = run_bash(str(ROOT / "examples" / "llm-selection" / "run.sh"), str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "6 succeeded" in out and "6 cached" in out
    assert out.count("48 records kept") == 2  # the pipeline's pick, then --alpha 0
    assert "48 of 192 records selected" in out
    assert "adapter_model.safetensors" in out


def test_training_quickstart_trains_to_the_issues_accuracy(tmp_path) -> None:
    """scikit-learn's four datasets, a release with two stages, one pipeline: the stage
    switches automatically and the best model reaches 0.95 on digits and 0.90 overall."""
    import json

    script = ROOT / "examples" / "quickstart" / "training" / "run.sh"
    result = run_bash(str(script), str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "7 succeeded" in out
    assert "🔄 阶段切换: pretraining → finetuning (epoch 8" in out
    assert "整体准确率" in out
    events = (tmp_path / "data_release_repo" / "stage_events.jsonl").read_text()
    switch = [
        json.loads(line) for line in events.splitlines() if '"to_stage": "finetuning"' in line
    ]
    assert switch and {"epoch", "loss", "accuracy"} <= set(switch[0]["metadata"])
    metrics = json.loads(next((tmp_path / "outputs").rglob("metrics.json")).read_text())
    assert metrics["final_eval_digits_accuracy"] >= 0.95
    assert metrics["final_eval_overall_accuracy"] >= 0.90
    assert metrics["final_eval_overall_samples"] == 676  # every test record
