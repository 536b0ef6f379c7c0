"""The shipped example (what `make demo` runs) works end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_quickstart_example_runs_end_to_end() -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", str(ROOT / "examples" / "quickstart" / "run.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "epoch  50: switched pretraining -> finetuning" in out
    assert "epoch 100: switched finetuning -> evaluation" in out
    assert "# Stage report" in out and '"event": "stage_switch"' in out
