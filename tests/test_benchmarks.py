"""Every benchmark script runs (tiny sizes, the same code paths) and prints its ratios.
The figures themselves are not checked: timings do not belong in tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.mark.parametrize(
    "script",
    [
        "data_preprocess.py",
        "data_load.py",
        "data_mixing.py",
        "pipeline_dag.py",
        "train_input.py",
        "train_eval.py",
        "select_quality.py",
        "select_throughput.py",
    ],
)
def test_benchmark_runs_quick(script: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ratio" in result.stdout.lower()
