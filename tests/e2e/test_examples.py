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
    assert list((tmp_path / "outputs").rglob("selected_data.jsonl"))
