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
