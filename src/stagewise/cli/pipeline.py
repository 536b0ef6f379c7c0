"""``stagewise run PIPELINE.yaml``: check a pipeline, record a run, and follow it to its end.

On a terminal the tasks show as a live table; off one (CI logs, ``--detach``'s
runner.log) each task state change is one line. ``stagewise runs resume`` follows a run
with the same display, so a detached run is just ``runs resume`` in a background process.
"""

from __future__ import annotations

import enum
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.live import Live
from rich.table import Table

from stagewise.cli.output import console, errors, print_json
from stagewise.cli.runs import DONE, headline, run_data, seconds_text, state_style
from stagewise.errors import ConfigError, PipelineError

if TYPE_CHECKING:  # the engine and the store load when a command runs, not with the CLI
    from stagewise.pipeline.executors.base import Executor
    from stagewise.pipeline.plan import Plan
    from stagewise.store.runs import RunRecord, RunStore


class ExecutorName(enum.StrEnum):
    local = "local"
    ray = "ray"


def run(
    pipeline_file: Path = typer.Argument(..., metavar="PIPELINE.yaml", help="The pipeline file."),
    overrides: list[str] | None = typer.Argument(
        None,
        metavar="OVERRIDES",
        help="Hydra-style overrides: NAME=VALUE sets a parameter, tasks.TASK.KEY=VALUE a "
        "task's key, +NAME=VALUE adds, ~NAME removes.",
    ),
    executor: ExecutorName = typer.Option(
        ExecutorName.local, "--executor", help="Where tasks run: local processes or Ray."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="An existing Ray cluster (default: a local Ray for the run)."
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Run every task, even those an earlier run already did."
    ),
    fit_resources: bool = typer.Option(
        False,
        "--fit-resources",
        help="Run a task that asks for more than the executor has on all that it has.",
    ),
    outputs: str | None = typer.Option(
        None,
        "--outputs",
        help="Root of the run folders (default: STAGEWISE_OUTPUTS, else ./outputs).",
    ),
    mount: list[str] | None = typer.Option(
        None,
        "--mount",
        metavar="SRC=DST",
        help="Read and write paths under SRC at DST instead (repeatable), e.g. obs://bucket=/data.",
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Local worker processes (default: one per CPU)."
    ),
    detach: bool = typer.Option(
        False, "--detach", help="Start the run in the background and return at once."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the finished run as JSON instead of the task table."
    ),
) -> None:
    """Run a pipeline: check it, record the run, run its tasks, and show their progress.

    Exit code 0 when the run succeeds, 1 when it fails or is cancelled, 2 when the
    pipeline or the command line is wrong (nothing is recorded then).
    """
    from stagewise.pipeline.runner import RunOptions, start_run
    from stagewise.pipeline.spec import load_pipeline
    from stagewise.store.runs import RunStore

    given = list(overrides or [])
    if ray_address and executor is not ExecutorName.ray:
        raise ConfigError(
            "--ray-address is for the ray executor",
            location="--ray-address",
            hint=f"add --executor ray to run on the cluster at {ray_address}",
        )
    options = RunOptions(
        executor=executor.value,
        no_cache=no_cache,
        fit_resources=fit_resources,
        outputs=outputs,
        mounts=_mounts(mount or []),
        ray_address=ray_address,
        workers=workers,
    )
    # Everything that can be wrong with the input is checked before the database is
    # touched, so a run that never started leaves no trace there.
    loaded = load_pipeline(pipeline_file, given)
    for warning in loaded.warnings:
        errors.print(f"[yellow]warning[/yellow] {_escape(warning.render())}")
    store = RunStore()
    engine = make_executor(options)
    run_id = start_run(loaded.plan, overrides=given, options=options, store=store, executor=engine)
    if detach:
        _detach(store.run(run_id), as_json)
        return
    follow(store.run(run_id), store, engine, loaded.plan, as_json)


def make_executor(options: Any) -> Executor:
    """The run's executor (not started), with a missing extra reported as such."""
    from stagewise.pipeline.runner import make_executor as make

    try:
        return make(options)
    except ImportError as exc:
        raise PipelineError(
            f"the {options.executor} executor cannot be loaded: {exc}",
            location=f"--executor {options.executor}",
            hint="pip install 'stagewise[ray]' for Ray, or run with --executor local",
        ) from None


def follow(
    record: RunRecord, store: RunStore, engine: Executor, planned: Plan, as_json: bool
) -> None:
    """Run (or resume) ``record`` to its end with the live display; exit with its state."""
    from stagewise.pipeline.runner import resume_run

    board = TaskBoard(planned, store, record.id, lines=not console.is_terminal, quiet=as_json)
    if not as_json:
        _header(record, engine, planned)
    if board.live:
        with Live(get_renderable=board.table, console=console, refresh_per_second=4):
            final = resume_run(record.id, store=store, executor=engine, listener=board)
    else:
        final = resume_run(record.id, store=store, executor=engine, listener=board)
    if as_json:
        print_json(run_data(store, final))
    else:
        _footer(final, store)
    if final.state != "succeeded":
        raise typer.Exit(130 if final.state == "interrupted" else 1)


@dataclass
class _Row:
    type: str
    state: str = "pending"
    attempt: int = 0
    started: float | None = None
    seconds: float | None = None
    note: str = ""


class TaskBoard:
    """The runner's listener: keeps each task's state for the live table, or prints a
    line per change when not on a terminal."""

    def __init__(
        self, planned: Plan, store: RunStore, run_id: str, *, lines: bool, quiet: bool
    ) -> None:
        self.lines = lines and not quiet
        self.live = not lines and not quiet
        self.rows = {name: _Row(t.spec.type) for name, t in planned.tasks.items()}
        self.width = max((len(n) for n in self.rows), default=4)
        for task in store.tasks(run_id):  # a resumed run starts from what is recorded
            row = self.rows.get(task.name)
            if row is not None:
                row.state, row.attempt = task.state, task.attempts
                if task.started_at and task.finished_at:
                    row.seconds = task.finished_at - task.started_at
                row.note = headline(task.error) or ""

    def __call__(self, event: str, task: str, data: dict[str, Any]) -> None:
        row = self.rows.get(task)
        if row is None:
            return
        now = time.time()
        attempt = data.get("attempt", row.attempt)
        text = None
        if event == "task_started":
            row.state, row.attempt, row.started, row.seconds, row.note = (
                "running", attempt, now, None, ""
            )  # fmt: skip
            text = f"started (attempt {attempt})"
        elif event == "task_succeeded":
            row.state = "succeeded"
            # Wall time from the claim, as 'runs show' reports it (the event's own figure
            # leaves out the worker's start).
            row.seconds = now - row.started if row.started else data.get("seconds")
            text = f"succeeded in {seconds_text(row.seconds)}"
        elif event == "task_cached":
            row.state, row.seconds = "cached", 0.0
            row.note = f"from run {data.get('from_run')}"
            text = f"cached ({row.note})"
        elif event == "task_retrying":
            row.state, row.note = "retrying", data.get("error") or ""
            text = f"attempt {attempt} failed: {row.note}; retrying in {data.get('delay', 0):g} s"
        elif event == "task_failed":
            row.state, row.note = "failed", data.get("error") or ""
            row.seconds = now - row.started if row.started else None
            text = f"failed (attempt {attempt}): {row.note}"
        elif event == "task_skipped":
            row.state, row.note = "skipped", data.get("reason") or ""
            text = f"skipped: {row.note}"
        elif event == "task_cancelled":
            row.state = "cancelled"
            text = "cancelled"
        elif event == "task_interrupted":
            text = f"attempt {attempt} was interrupted when its runner stopped; it runs again"
        elif event == "task_adopted":
            text = f"attempt {attempt} had finished before its runner stopped; kept"
        elif event == "model_deployed":
            text = f"recorded model artifact {data.get('artifact')}"
        if text and self.lines:
            stamp = time.strftime("%H:%M:%S", time.localtime(now))
            console.print(f"{stamp} {task:<{self.width}}  {_escape(text)}", soft_wrap=True)

    def table(self) -> Table:
        result = Table(show_lines=False, box=None, padding=(0, 2))
        for column in ("task", "type", "state", "attempt", "duration", ""):
            result.add_column(column)
        now = time.time()
        for name, row in self.rows.items():
            seconds = row.seconds
            if seconds is None and row.state == "running" and row.started:
                seconds = now - row.started
            style = state_style(row.state)
            result.add_row(
                name,
                row.type,
                f"[{style}]{row.state}[/{style}]",
                str(row.attempt or "-"),
                seconds_text(seconds),
                _escape(row.note),
            )
        return result


def _header(record: RunRecord, engine: Executor, planned: Plan) -> None:
    console.print(f"run [bold]{record.id}[/bold]  (pipeline {_escape(record.pipeline)})")
    console.print(f"executor: {_escape(engine.describe())}")
    console.print(f"outputs:  {_escape(record.output_dir)}")
    if record.executor == "local":
        for image in sorted({t.spec.image for t in planned.tasks.values() if t.spec.image}):
            console.print(
                f"note: image {_escape(image)} is recorded; a local run uses the current "
                "Python environment"
            )


def _footer(record: RunRecord, store: RunStore) -> None:
    tasks = store.tasks(record.id)
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task.state] = counts.get(task.state, 0) + 1
    took = (record.finished_at or time.time()) - record.created_at
    summary = ", ".join(f"{n} {state}" for state, n in counts.items())
    style = state_style(record.state)
    console.print(
        f"[{style}]{record.state}[/{style}] in {seconds_text(took)}: {summary}  ({record.id})"
    )
    if record.state == "interrupted":
        console.print(f"resume it with: stagewise runs resume {record.id}")
    for task in tasks:
        if task.state == "failed":
            console.print(
                f"  {task.name}: {_escape(headline(task.error) or 'failed')}\n"
                f"  log: stagewise runs logs {record.id} {task.name}"
            )
    if record.state == "failed" and any(t.state not in DONE for t in tasks):
        console.print(f"retry what did not succeed: stagewise runs resume {record.id}")


def _detach(record: RunRecord, as_json: bool) -> None:
    """Follow the run from a background process that outlives this command."""
    folder = Path(record.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "runner.log"
    with open(log, "ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "stagewise", "runs", "resume", record.id],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C or closing this terminal does not stop it
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    if as_json:
        print_json(
            {"run_id": record.id, "pid": process.pid, "output_dir": str(folder), "log": str(log)}
        )
        return
    console.print(f"run [bold]{record.id}[/bold] started in the background (pid {process.pid})")
    console.print(f"follow it: stagewise runs show {record.id}   (runner log: {_escape(str(log))})")
    console.print(f"stop it:   stagewise runs cancel {record.id}")


def _mounts(given: list[str]) -> dict[str, str]:
    mounts: dict[str, str] = {}
    for item in given:
        source, sep, target = item.partition("=")
        if not sep or not source or not target:
            raise ConfigError(
                f"{item!r} is not SRC=DST",
                location="--mount",
                hint="write e.g. --mount obs://bucket/data=/mnt/data",
            )
        mounts[source] = target
    return mounts


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
