"""``stagewise runs ...``: what runs did, from the metadata database (list, show, logs),
and the verbs that act on a run (resume, cancel). Run ids may be any unique prefix.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.tree import Tree

from stagewise.cli.output import console, errors, print_json, table
from stagewise.errors import PipelineError, RunNotFoundError

if TYPE_CHECKING:  # the store (SQLAlchemy) loads when a command runs, not with the CLI
    from stagewise.store.runs import ArtifactRecord, RunRecord, RunStore, TaskRecord

# The task states of stagewise.store.runs, repeated so that the CLI starts without it.
DONE = ("succeeded", "cached")
FINISHED = ("succeeded", "cached", "failed", "skipped", "cancelled")

app = typer.Typer(help="Pipeline runs: list, show, logs, resume, cancel.", no_args_is_help=True)

JsonOption = typer.Option(False, "--json", help="Print JSON instead of tables.")
RunArgument = typer.Argument(..., metavar="RUN", help="A run id, or a unique prefix of one.")
NO_RUNNER = "running (no live runner: resume it)"
_STYLES = {
    "succeeded": "green", "cached": "cyan", "failed": "red", "running": "yellow",
    "retrying": "magenta", "interrupted": "magenta", "timed_out": "red",
}  # fmt: skip


# ------------------------------------------------------------------ formatting


def state_style(state: str) -> str:
    return _STYLES.get(state, "dim")


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def headline(error: str | None) -> str | None:
    """The last line of an error (a traceback's exception line), for one-line displays."""
    if not error:
        return None
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    return lines[-1] if lines else None


def _when(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="seconds")


# ------------------------------------------------------------------ data (shared with --json)


def open_store() -> RunStore:
    from stagewise.store.runs import RunStore

    return RunStore()


def runner_alive(store: RunStore, run_id: str) -> bool:
    from stagewise.pipeline.runner import runner_alive as alive

    return any(alive(info) for info in store.runners(run_id).values())


def shown_state(store: RunStore, record: RunRecord) -> str:
    if record.state == "running" and not runner_alive(store, record.id):
        return NO_RUNNER
    return record.state


def _run_summary(store: RunStore, record: RunRecord, tasks: list[TaskRecord]) -> dict[str, Any]:
    end = record.finished_at or (time.time() if record.state == "running" else None)
    return {
        "id": record.id,
        "pipeline": record.pipeline,
        "version": record.pipeline_version,
        "state": record.state,
        "shown_state": shown_state(store, record),
        "runner_alive": runner_alive(store, record.id),
        "created_at": _when(record.created_at),
        "finished_at": _when(record.finished_at),
        "seconds": None if end is None else round(end - record.created_at, 3),
        "tasks_done": sum(t.state in DONE for t in tasks),
        "tasks_total": len(tasks),
        "error": record.error,
        "output_dir": record.output_dir,
    }


def upstream_of(record: RunRecord) -> dict[str, tuple[str, ...]]:
    """Each task's upstream tasks, from the pipeline recorded with the run."""
    from stagewise.config.pipeline import PipelineFile
    from stagewise.errors import StagewiseError
    from stagewise.pipeline.plan import plan

    try:
        planned = plan(PipelineFile.model_validate(record.spec))
    except (StagewiseError, ValueError):  # a spec from another stagewise: no edges, not a crash
        return {}
    return {name: t.upstream for name, t in planned.tasks.items()}


def _types_of(record: RunRecord) -> dict[str, str]:
    return {t.get("name"): t.get("type", "python") for t in record.spec["spec"]["tasks"]}


def artifact_data(artifact: ArtifactRecord) -> dict[str, Any]:
    return {**artifact.__dict__, "created_at": _when(artifact.created_at)}


def run_data(store: RunStore, record: RunRecord) -> dict[str, Any]:
    """Everything ``runs show`` tells about a run, as plain data."""
    tasks = store.tasks(record.id)
    upstream = upstream_of(record)
    types = _types_of(record)
    task_rows = []
    for task in tasks:
        seconds = None
        if task.started_at and (task.finished_at or task.state == "running"):
            seconds = round((task.finished_at or time.time()) - task.started_at, 6)
        task_rows.append(
            {
                "name": task.name,
                "type": types.get(task.name),
                "state": task.state,
                "attempts": task.attempts,
                "failures": task.failures,
                "upstream": list(upstream.get(task.name, ())),
                "started_at": _when(task.started_at),
                "finished_at": _when(task.finished_at),
                "seconds": seconds,
                "error": task.error,
                "error_headline": headline(task.error),
            }
        )
    position = {t.name: t.position for t in tasks}
    written = sorted(
        store.artifacts_of(record.id).items(), key=lambda i: (position.get(i[0][0], 0), i[0])
    )
    outputs = [
        {"task": task, "output": name, **artifact_data(artifact)}
        for (task, name), artifact in written
    ]
    summary = _run_summary(store, record, tasks)
    summary.update(
        source=record.source,
        overrides=record.overrides,
        executor=record.executor,
        options=record.options,
        cancel_requested=record.cancel_requested,
    )
    return {"run": summary, "tasks": task_rows, "outputs": outputs}


# ------------------------------------------------------------------ read verbs


@app.command("list")
def list_runs(
    pipeline: str | None = typer.Option(None, "--pipeline", help="Only this pipeline's runs."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="How many runs, newest first."),
    as_json: bool = JsonOption,
) -> None:
    """List runs, newest first: state, when, how long, and tasks done."""
    store = open_store()
    rows = [_run_summary(store, r, store.tasks(r.id)) for r in store.list_runs(limit, pipeline)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no runs yet: start one with 'stagewise run PIPELINE.yaml'")
        return
    body = [
        [
            r["id"],
            r["pipeline"],
            f"[{state_style(r['state'])}]{escape(r['shown_state'])}[/]",
            (r["created_at"] or "")[:19].replace("T", " "),
            seconds_text(r["seconds"]),
            f"{r['tasks_done']}/{r['tasks_total']}",
        ]
        for r in rows
    ]
    console.print(table(None, ["run", "pipeline", "state", "created", "duration", "tasks"], body))


@app.command()
def show(run_id: str = RunArgument, as_json: bool = JsonOption) -> None:
    """Show a run: its state, the DAG with each task's state and duration, and its outputs."""
    store = open_store()
    data = run_data(store, store.run(run_id))
    if as_json:
        print_json(data)
        return
    run = data["run"]
    console.print(
        f"run [bold]{run['id']}[/bold]  pipeline {escape(run['pipeline'])}"
        + (f" v{escape(str(run['version']))}" if run["version"] else "")
    )
    console.print(
        f"state: [{state_style(run['state'])}]{escape(run['shown_state'])}[/]   "
        f"created {(run['created_at'] or '')[:19].replace('T', ' ')}   "
        f"duration {seconds_text(run['seconds'])}   "
        f"tasks {run['tasks_done']}/{run['tasks_total']} done"
    )
    console.print(f"executor: {run['executor']}   outputs: {escape(run['output_dir'])}")
    if run["overrides"]:
        console.print("overrides: " + escape(" ".join(run["overrides"])))
    if run["error"]:
        console.print(f"[red]error:[/red] {escape(run['error'])}")
    console.print(_dag(run["id"], data["tasks"]))
    if data["outputs"]:
        rows = [[o["task"], o["output"], o["id"], o["uri"]] for o in data["outputs"]]
        console.print(table("outputs", ["task", "output", "artifact", "uri"], rows))


def _dag(run_id: str, tasks: list[dict[str, Any]]) -> Tree:
    """The DAG as a tree in topological order: each task under its last upstream task,
    with its other upstream tasks named."""
    root = Tree(f"[bold]{run_id}[/bold]")
    nodes: dict[str, Tree] = {}
    position = {t["name"]: i for i, t in enumerate(tasks)}
    for task in tasks:
        upstream = sorted(task["upstream"], key=lambda n: position.get(n, -1))
        parent = nodes.get(upstream[-1], root) if upstream else root
        style = state_style(task["state"])
        label = (
            f"[bold]{escape(task['name'])}[/bold]  [{style}]{task['state']}[/]"
            f"  {task['attempts']} attempt{'s' if task['attempts'] != 1 else ''}"
            f"  {seconds_text(task['seconds'])}"
        )
        if len(upstream) > 1:
            label += f"  [dim](after {', '.join(upstream)})[/dim]"
        if task["error_headline"] and task["state"] != "succeeded":
            label += f"\n[red]{escape(task['error_headline'])}[/red]"
        nodes[task["name"]] = parent.add(label)
    return root


@app.command()
def logs(
    run_id: str = RunArgument,
    task: str = typer.Argument(..., help="The task's name."),
    attempt: int | None = typer.Option(
        None, "--attempt", min=1, help="Which attempt (default: the latest)."
    ),
) -> None:
    """Print the log of a task's attempt (its stdout and stderr)."""
    store = open_store()
    record = store.run(run_id)
    tasks = {t.name: t for t in store.tasks(record.id)}
    if task not in tasks:
        raise RunNotFoundError(
            f"run {record.id} has no task {task!r}",
            location=record.source,
            hint=f"the tasks are: {', '.join(tasks)}",
        )
    attempts = store.attempts(record.id, task)
    if not attempts:
        state = tasks[task].state
        why = (
            "its outputs came from an earlier run's cache"
            if state == "cached"
            else f"it has no attempts yet (state: {state})"
        )
        raise PipelineError(
            f"task '{task}' of run {record.id} has no log: {why}",
            hint="see the run with 'stagewise runs show " + record.id + "'",
        )
    chosen = (
        attempts[-1]
        if attempt is None
        else next((a for a in attempts if a.number == attempt), None)
    )
    if chosen is None:
        raise PipelineError(
            f"task '{task}' of run {record.id} has no attempt {attempt}",
            hint=f"its attempts are: {', '.join(str(a.number) for a in attempts)}",
        )
    log = Path(chosen.log or "")
    if chosen.log and not log.exists() and log.parent.is_dir():
        # An attempt that printed nothing leaves no log file (see pipeline/attempt_log.py).
        errors.print(f"attempt {chosen.number} of '{task}' wrote no output")
        return
    try:
        text = log.read_bytes()
    except OSError as exc:
        raise PipelineError(
            f"the log of attempt {chosen.number} cannot be read: {exc.strerror or exc}",
            location=chosen.log,
            hint="the run folder may have been moved or deleted",
        ) from None
    sys.stdout.buffer.write(text)
    sys.stdout.flush()


# ------------------------------------------------------------------ verbs that act


@app.command()
def resume(run_id: str = RunArgument) -> None:
    """Finish a run: finished tasks stay finished, interrupted ones run again, and failed,
    skipped or cancelled ones get a fresh start (exit code as for 'stagewise run')."""
    from stagewise.cli.pipeline import follow, make_executor
    from stagewise.config.pipeline import PipelineFile
    from stagewise.pipeline import tasks as task_types
    from stagewise.pipeline.plan import plan
    from stagewise.pipeline.runner import RunOptions

    store = open_store()
    record = store.run(run_id)
    if record.state == "succeeded":
        console.print(f"run {record.id} has already succeeded; nothing to do")
        return
    planned = plan(PipelineFile.model_validate(record.spec), check_type=task_types.check)
    engine = make_executor(RunOptions.from_data(record.options))
    follow(record, store, engine, planned, as_json=False)


@app.command()
def cancel(
    run_id: str = RunArgument,
    wait: float = typer.Option(
        30.0, "--wait", min=0, help="Seconds to wait for a live runner to stop its tasks."
    ),
) -> None:
    """Cancel a run: its runner stops the running tasks and nothing new starts."""
    from stagewise.pipeline.runner import cancel_run

    store = open_store()
    record = store.run(run_id)
    if record.state in FINISHED:
        errors.print(f"run {record.id} has already finished ({record.state}); nothing to cancel")
        return
    record = cancel_run(record.id, store=store)
    deadline = time.monotonic() + wait
    while record.state == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
        record = store.run(record.id)
    if record.state == "running":
        console.print(
            f"cancel requested: run {record.id}'s runner stops at its next check "
            f"(see 'stagewise runs show {record.id}')"
        )
    else:
        console.print(f"run {record.id}: {record.state}")
