"""A shell task's processes never outlive the worker that runs them, however it dies."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stagewise.pipeline.worker import Work, execute

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux signals")

# A worker process that runs one shell attempt and prints the guard shell's pid.
WORKER = """
import sys, threading, time
from stagewise.pipeline import worker
from stagewise.pipeline.worker import Work, execute

def report():
    while worker._child is None:
        time.sleep(0.01)
    print(worker._child.pid, flush=True)

threading.Thread(target=report, daemon=True).start()
execute(Work(run_id="r", task="t", attempt=1, kind="shell", target=sys.argv[1]))
"""


def _until(path: Path, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"{path.name} did not appear within {seconds} s")
        time.sleep(0.02)


@pytest.mark.parametrize("also_kill_the_guard", [False, True], ids=["worker", "worker+guard"])
def test_a_killed_worker_takes_the_whole_command_with_it(
    tmp_path: Path, also_kill_the_guard: bool
) -> None:
    """Ray SIGKILLs a dead worker's direct children (the guard shell) before the guard can
    run its trap; the watchdog must still stop the grandchildren."""
    started, late = tmp_path / "STARTED", tmp_path / "LATE"
    inner = shlex.quote(f"sleep 2; touch {shlex.quote(str(late))}")
    command = f"touch {shlex.quote(str(started))}; sh -c {inner}"
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, command], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        guard = int(process.stdout.readline())
        _until(started)
        if also_kill_the_guard:
            os.kill(guard, signal.SIGKILL)
        process.kill()
        process.wait()
        time.sleep(2.5)
        assert not late.exists(), "the command outlived its worker"
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_a_shell_timeout_is_enforced_by_the_worker_itself(tmp_path: Path) -> None:
    late = tmp_path / "LATE"
    work = Work(
        run_id="r",
        task="t",
        attempt=1,
        kind="shell",
        target=f"sh -c 'sleep 2; touch {shlex.quote(str(late))}'",
        timeout=0.5,
    )
    outcome = execute(work)
    assert (outcome.ok, outcome.state) == (False, "timed_out")
    assert "timeout of 0.5 s" in (outcome.error or "")
    time.sleep(2.0)
    assert not late.exists()


def test_a_shell_command_keeps_its_exit_status_and_stdin_is_empty(tmp_path: Path) -> None:
    seen = tmp_path / "stdin.txt"
    ok = execute(Work("r", "t", 1, "shell", f"cat > {shlex.quote(str(seen))}"))
    assert ok.ok and seen.read_text() == ""
    failed = execute(Work("r", "t", 1, "shell", "exit 3"))
    assert not failed.ok and "status 3" in (failed.error or "")
