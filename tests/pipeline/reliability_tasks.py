"""Task functions and child-process entry points for the reliability tests.

Every task appends ``<task> <attempt>`` to a ledger file before it writes its output, so a
test can tell from the ledger alone which tasks ran and how often. The ``__main__`` part
runs a pipeline (or resumes a run) in a separate process that a test can SIGKILL::

    python -m tests.pipeline.reliability_tasks run PIPELINE.yaml OUTPUTS WORKERS [GO_FILE]
    python -m tests.pipeline.reliability_tasks resume RUN_ID [GO_FILE]

The database is the one in ``STAGEWISE_DB_URL``. With a GO_FILE the child imports,
connects and loads everything first, then waits for that file to appear: a test can start
children ahead of time and set them off at a moment of its choosing.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


def _note(ledger: str, context: dict[str, Any]) -> None:
    # One short O_APPEND write per line: lines of concurrent workers never interleave.
    with open(ledger, "a", encoding="utf-8") as book:
        book.write(f"{context['task']} {context['attempt']}\n")


def step(context: dict[str, Any], ledger: str, pause: float = 0.0, **_: Any) -> None:
    """Checks that its inputs are there, notes itself in the ledger, writes its output."""
    for name, path in context["inputs"].items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"input {name!r} is missing at {path}")
    time.sleep(pause)
    _note(ledger, context)
    for path in context["outputs"].values():
        Path(path).write_text(context["task"])


def fail_always(context: dict[str, Any], ledger: str) -> None:
    _note(ledger, context)
    raise RuntimeError(f"{context['task']} always fails")


def _first_time(once: str) -> bool:
    """True the first time it is called with ``once`` (a file it creates), in any process."""
    try:
        os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def stop_runner_after(context: dict[str, Any], ledger: str, once: str, **_: Any) -> None:
    """Like :func:`step`, then freezes the runner (SIGSTOP to the worker's parent) the first
    time it runs, so that the runner cannot record the success the worker is about to
    report: the test then sees the result line end the log and SIGKILLs the frozen runner.
    Never again after that: run twice (the bug the test looks for), it must not freeze the
    test process that resumes the run."""
    step(context, ledger)
    if _first_time(once):
        os.kill(os.getppid(), signal.SIGSTOP)


def hang_after_writing(context: dict[str, Any], ledger: str, once: str, **_: Any) -> None:
    """Like :func:`step`, then, the first time, hangs with its output written but not yet
    published: a runner killed now leaves that attempt's temporary output behind."""
    step(context, ledger)
    if _first_time(once):
        time.sleep(60)


# ---------------------------------------------------------------------- pipelines


def _task(name: str, upstream: list[str], pause: float) -> dict[str, Any]:
    return {
        "name": name,
        "function": f"{__name__}:step",
        # A label of its own: no two tasks alike (see the test of twins in test_reliability).
        "parameters": {"pause": pause, "label": name},
        "inputs": [{"name": f"in_{u}", "source": f"${{tasks.{u}.outputs.out}}"} for u in upstream],
        "outputs": [{"name": "out"}],
    }


def mixed_dag() -> list[tuple[str, list[str]]]:
    """20 tasks: a root fanning out to 6 two-task chains that join, a 3-task chain after
    the join, and an independent 3-task chain."""
    edges: list[tuple[str, list[str]]] = [("root", [])]
    edges += [(f"a{i}", ["root"]) for i in range(6)]
    edges += [(f"b{i}", [f"a{i}"]) for i in range(6)]
    edges += [("join", [f"b{i}" for i in range(6)])]
    edges += [("c0", ["join"]), ("c1", ["c0"]), ("c2", ["c1"])]
    edges += [("d0", []), ("d1", ["d0"]), ("d2", ["d1"])]
    return edges


def fan_out(count: int) -> list[tuple[str, list[str]]]:
    """A root, ``count - 2`` leaves that read it, and a sink that reads every leaf."""
    leaves = [f"leaf{i:02d}" for i in range(count - 2)]
    return [("root", []), *[(leaf, ["root"]) for leaf in leaves], ("sink", leaves)]


def write_pipeline(
    path: Path,
    name: str,
    edges: list[tuple[str, list[str]]],
    ledger: Path,
    pauses: list[float],
    extra: list[dict[str, Any]] | None = None,
    dependencies: Sequence[tuple[str, str]] = (),
) -> Path:
    """A pipeline file of :func:`step` tasks wired as ``edges`` (task, its upstreams),
    then the ``extra`` tasks as given, and ``dependencies`` (from, to) without data."""
    tasks = [_task(n, ups, p) for (n, ups), p in zip(edges, pauses, strict=True)]
    document = {
        "apiVersion": "stagewise/v1",
        "kind": "Pipeline",
        "metadata": {"name": name, "version": "1"},
        "spec": {
            "parameters": {"ledger": str(ledger)},
            "tasks": tasks + (extra or []),
            "dependencies": [{"from": a, "to": b} for a, b in dependencies],
        },
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def read_ledger(ledger: Path) -> list[str]:
    """The task names in the ledger, one per attempt that got as far as noting itself."""
    if not ledger.exists():
        return []
    return [line.split()[0] for line in ledger.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------- child processes


def _wait_for(go: str | None) -> None:
    if go:
        Path(f"{go}.{os.getpid()}.ready").touch()
    while go and not os.path.exists(go):
        time.sleep(0.002)


def _run(pipeline: str, outputs: str, workers: str, go: str | None = None) -> None:
    from stagewise.pipeline.runner import RunOptions, run_pipeline
    from stagewise.pipeline.spec import load_pipeline
    from stagewise.store.runs import RunStore

    planned = load_pipeline(pipeline).plan
    store = RunStore()
    _wait_for(go)
    record = run_pipeline(
        planned, options=RunOptions(outputs=outputs, workers=int(workers)), store=store
    )
    print(record.id, record.state, flush=True)  # the parent reads it


def _resume(run_id: str, go: str | None = None) -> None:
    from stagewise.pipeline.runner import resume_run
    from stagewise.store.runs import RunStore

    store = RunStore()
    _wait_for(go)
    record = resume_run(run_id, store=store)
    print(record.id, record.state, flush=True)  # the parent reads it


if __name__ == "__main__":
    commands = {"run": _run, "resume": _resume}
    commands[sys.argv[1]](*sys.argv[2:])
