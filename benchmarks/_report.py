"""Shared by the benchmark scripts: child processes for fresh-process timings, aligned
tables, rates and verdicts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def run_child(script: str, mode: str, python: str | None = None, **options: Any) -> dict[str, Any]:
    """Run ``script`` as a fresh child process in ``mode``: its JSON answer (the last line
    it prints) plus ``child_wall``, its wall time as the parent saw it."""
    command = [python or sys.executable, script, "--child", mode, "--options", json.dumps(options)]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"child {mode} failed:\n{done.stderr[-4000:]}")
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    answer["child_wall"] = wall
    return answer


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    out = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    for row in rows:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(out)


def rate(x: float) -> str:
    return f"{x / 1e6:.2f}M/s" if x >= 1e6 else f"{x / 1e3:.1f}k/s"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def peer_venv(
    venv: Path, packages: list[str], imports: str, install: bool
) -> tuple[str | None, str]:
    """The Python of a peers' virtual environment (never the project's), made with
    ``packages`` when ``install``; (None, why) when it cannot be had."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", f"import {imports}"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return str(python), "ready"
    if not install:
        return None, f"skipped: no ready venv at {venv} (run without --quick to install)"
    log = venv.parent / f"{venv.name}-install.log"
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", *packages],
    ]
    with open(log, "w") as out:
        for step in steps:
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                return None, f"install failed: see {log}"
    if subprocess.run(probe, capture_output=True).returncode != 0:
        return None, f"installed but cannot import: see {log}"
    return str(python), "installed"
