"""Pipeline runs in the metadata database: the only module that reads or writes their rows.

The runner hands over a :class:`Changes` batch per turn of its loop and gets back the
tasks it managed to claim: one transaction per batch keeps the cost per task low, and a
claim is a conditional ``UPDATE ... WHERE state IN ('pending', 'retrying')``, so two
runners working on one run never both start a task. Records going out are plain
dataclasses; no SQLAlchemy type leaves this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from sqlalchemy import (
    JSON,
    Table,
    and_,
    bindparam,
    delete,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.exc import OperationalError

from stagewise.errors import DatabaseError, PipelineError, RunNotFoundError
from stagewise.store import db
from stagewise.store.tables import artifacts, attempts, bindings, events, runners, runs, tasks

DONE = ("succeeded", "cached")
FINISHED = ("succeeded", "cached", "failed", "skipped", "cancelled")
CLAIMABLE = ("pending", "retrying")


@dataclass(frozen=True)
class RunRecord:
    id: str
    pipeline: str
    pipeline_version: str | None
    state: str
    spec: dict[str, Any]
    source: str | None
    overrides: list[str]
    executor: str
    output_dir: str
    options: dict[str, Any]
    cancel_requested: bool
    created_at: float
    finished_at: float | None
    error: str | None


@dataclass(frozen=True)
class TaskRecord:
    run_id: str
    name: str
    position: int
    state: str
    attempts: int
    failures: int
    runner_id: str | None
    not_before: float | None
    cache_key: str | None
    started_at: float | None
    finished_at: float | None
    error: str | None
    result: Any


@dataclass(frozen=True)
class AttemptRecord:
    run_id: str
    task: str
    number: int
    state: str
    runner_id: str
    started_at: float
    finished_at: float | None
    error: str | None
    log: str | None


@dataclass(frozen=True)
class ArtifactRecord:
    id: str
    run_id: str | None
    task: str | None
    name: str | None
    kind: str
    uri: str
    fingerprint: str
    size: int | None
    created_at: float


@dataclass(frozen=True)
class Claim:
    task: str
    log: str | None = None


@dataclass
class Changes:
    """What one turn of the runner changed; applied in one transaction."""

    claims: list[Claim] = field(default_factory=list)
    tasks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    attempts: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    bindings: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)
    finish: dict[str, Any] = field(default_factory=dict)  # {"values": ..., "event": ...}

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def event(self, run_id: str, name: str, task: str | None = None, **data: Any) -> None:
        self.events.append(
            {
                "run_id": run_id,
                "task": task,
                "time": time.time(),
                "event": name,
                "data": data or None,
            }
        )


# Statements are built once: building and hashing a statement per call cost more than the
# database itself (a runner turn is a handful of statements, and a turn is one task).
_CLAIM = (
    update(tasks)
    .where(
        tasks.c.run_id == bindparam("_run"),
        tasks.c.name == bindparam("_name"),
        # Not in_(): an expanding IN cannot be compiled once and reused (see _run).
        or_(*[tasks.c.state == literal_column(f"'{state}'") for state in CLAIMABLE]),
    )
    .values(
        state="running",
        runner_id=bindparam("_runner"),
        attempts=tasks.c.attempts + 1,
        not_before=None,
        started_at=bindparam("_now"),
    )
    .returning(tasks.c.attempts, tasks.c.failures)
)
_BINDING_KEY = ("run_id", "task", "direction", "name")
_UNBIND = delete(bindings).where(*[bindings.c[k] == bindparam(f"_{k}") for k in _BINDING_KEY])
_INSERT = {table: insert(table) for table in (attempts, artifacts, bindings, events)}
_KEYS = {
    tasks: {"_run": tasks.c.run_id, "_name": tasks.c.name},
    attempts: {"_run": attempts.c.run_id, "_task": attempts.c.task, "_number": attempts.c.number},
    runs: {"_id": runs.c.id},
}
_updates: dict[tuple[Table, tuple[str, ...]], Any] = {}


def _update_many(
    conn: Any, table: Table, rows: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    """UPDATE rows of ``table``: (key values, new values) pairs, grouped by the columns set."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for key, values in rows:
        groups.setdefault(tuple(sorted(values)), []).append({**key, **values})
    for columns, params in groups.items():
        statement = _updates.get((table, columns))
        if statement is None:
            where = [column == bindparam(name) for name, column in _KEYS[table].items()]
            statement = update(table).where(*where).values({c: bindparam(c) for c in columns})
            _updates[(table, columns)] = statement
        _run(conn, statement, params)


# The hot statements run on the driver's cursor with SQL compiled once per dialect: going
# through SQLAlchemy's execute cost about five times what the database itself does.
_compiled: dict[tuple[Any, ...], tuple[str, list[str] | None, set[str], dict[str, Any]]] = {}


def _run(conn: Any, statement: Any, rows: list[dict[str, Any]], *, fetch: bool = False) -> Any:
    """Execute ``statement`` for each row (many at once), or once returning its first row."""
    dialect = conn.dialect
    columns = list(rows[0]) if rows and statement.is_insert else None
    key = (id(statement), dialect.name, tuple(columns or ()))
    found = _compiled.get(key)
    if found is None:
        compiled = statement.compile(dialect=dialect, column_keys=columns)
        names = list(compiled.positiontup) if compiled.positional else None
        table = statement.table
        as_json = {c.name for c in table.columns if isinstance(c.type, JSON)}
        # Values written into the statement itself (state='running', not_before=NULL).
        fixed = {n: b.effective_value for n, b in compiled.binds.items() if not b.required}
        found = (str(compiled), names, as_json, fixed)
        _compiled[key] = found
    sql, names, as_json, fixed = found
    if as_json or fixed:
        rows = [
            {
                **fixed,
                **{k: json.dumps(v) if k in as_json and v is not None else v for k, v in r.items()},
            }
            for r in rows
        ]
    params = [tuple(r[n] for n in names) for r in rows] if names is not None else rows
    cursor = conn.connection.driver_connection.cursor()
    try:
        if fetch:
            cursor.execute(sql, params[0])
            return cursor.fetchone()
        if len(params) == 1:
            cursor.execute(sql, params[0])
        else:
            cursor.executemany(sql, params)
    finally:
        cursor.close()
    return None


def _transient(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return any(word in text for word in ("deadlock", "database is locked", "could not serialize"))


def _first_line(exc: Exception) -> str:
    return (str(getattr(exc, "orig", exc)).strip().splitlines() or [""])[0]


def _record(cls: type, row: Any) -> Any:
    mapping = row._mapping
    return cls(**{f.name: mapping[f.name] for f in fields(cls)})


class RunStore:
    """Runs, tasks, attempts, artifacts and events of one metadata database."""

    def __init__(self, url: str | None = None) -> None:
        self.url = db.database_url(url)
        self.engine = db.engine(self.url)
        # A connection kept for apply(), the runner's hot path, one per thread: checking
        # one out of the pool and resetting it on return cost as much as a turn's statements.
        self._local = threading.local()

    def close(self) -> None:
        """Give back the connection that apply() keeps for this thread."""
        writer = getattr(self._local, "writer", None)
        if writer is not None and self._local.pid == os.getpid():
            writer.info.pop("stagewise_write", None)
            writer.close()
        self._local.writer = None

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Any]:
        writer = getattr(self._local, "writer", None)
        if writer is None or self._local.pid != os.getpid() or writer.closed:
            writer = self._local.writer = self.engine.connect()
            writer.info["stagewise_write"] = True
            self._local.pid = os.getpid()
        try:
            with writer.begin():
                yield writer
        except Exception:
            self.close()  # a broken connection is not kept
            raise

    # ------------------------------------------------------------------ writing

    def create_run(self, run: dict[str, Any], task_rows: Sequence[dict[str, Any]]) -> None:
        now = time.time()
        with db.write(self.engine) as conn:
            conn.execute(insert(runs).values(created_at=now, cancel_requested=False, **run))
            conn.execute(
                insert(tasks),
                [{"run_id": run["id"], "attempts": 0, "failures": 0, **row} for row in task_rows],
            )
            conn.execute(
                insert(events),
                [
                    {
                        "run_id": run["id"],
                        "task": None,
                        "time": now,
                        "event": "run_created",
                        "data": None,
                    }
                ],
            )

    def apply(self, run_id: str, runner_id: str, changes: Changes) -> dict[str, tuple[int, int]]:
        """Apply ``changes`` in one transaction; returns {task: (attempt number, failures so
        far)} for the claims that were won. A deadlock or a busy database is retried."""
        # Rows are locked in one order (by task name) in every runner, so that two runners
        # rarely wait on each other's locks; when they do, the retry below settles it.
        changes.claims.sort(key=lambda c: c.task)
        changes.tasks.sort(key=lambda t: t[0])
        changes.attempts.sort(key=lambda a: (a[0], a[1]))
        for retry in range(6):
            try:
                won, started = self._apply(run_id, runner_id, changes)
                break
            except OperationalError as exc:
                if retry == 5 or not _transient(exc):
                    raise DatabaseError(
                        f"the metadata database refused an update: {_first_line(exc)}",
                        location=db.display_url(self.url),
                        hint="check that the database is up; then resume the run",
                    ) from exc
                time.sleep(0.02 * 2**retry)
        changes.events.extend(started)
        return won

    def _apply(
        self, run_id: str, runner_id: str, changes: Changes
    ) -> tuple[dict[str, tuple[int, int]], list[dict[str, Any]]]:
        won: dict[str, tuple[int, int]] = {}
        started: list[dict[str, Any]] = []
        now = time.time()
        with self._writing() as conn:
            # Updates before claims: a task set back to 'retrying' in this turn can be
            # claimed in the same turn.
            _update_many(conn, tasks, [({"_run": run_id, "_name": n}, v) for n, v in changes.tasks])
            _update_many(
                conn,
                attempts,
                [({"_run": run_id, "_task": n, "_number": k}, v) for n, k, v in changes.attempts],
            )
            new_attempts = []
            for claim in changes.claims:
                row = _run(
                    conn,
                    _CLAIM,
                    [{"_run": run_id, "_name": claim.task, "_runner": runner_id, "_now": now}],
                    fetch=True,
                )
                if row is None:
                    continue
                number, failures = row
                won[claim.task] = (number, failures)
                new_attempts.append(
                    {
                        "run_id": run_id,
                        "task": claim.task,
                        "number": number,
                        "state": "running",
                        "runner_id": runner_id,
                        "started_at": now,
                        "log": (claim.log or "").replace("{attempt}", str(number)) or None,
                    }
                )
                started.append(
                    {
                        "run_id": run_id,
                        "task": claim.task,
                        "time": now,
                        "event": "task_started",
                        "data": {"attempt": number},
                    }
                )
            if new_attempts:
                _run(conn, _INSERT[attempts], new_attempts)
            if changes.artifacts:
                conn.execute(_INSERT[artifacts], changes.artifacts)
            if changes.bindings:
                # A task finished again (resumed, adopted) binds afresh.
                conn.execute(
                    _UNBIND, [{f"_{k}": row[k] for k in _BINDING_KEY} for row in changes.bindings]
                )
                conn.execute(_INSERT[bindings], changes.bindings)
            if changes.run:
                _update_many(conn, runs, [({"_id": run_id}, changes.run)])
            rows = [*changes.events, *started]
            if changes.finish:
                # Only the first runner to see the end records it (and its event).
                ended = conn.execute(
                    update(runs)
                    .where(runs.c.id == run_id, runs.c.state == "running")
                    .values(**changes.finish["values"])
                ).rowcount
                if ended:
                    rows.append(changes.finish["event"])
            if rows:
                _run(conn, _INSERT[events], rows)
        return won, started

    def request_cancel(self, run_id: str) -> None:
        with db.write(self.engine) as conn:
            found = conn.execute(
                update(runs).where(runs.c.id == run_id).values(cancel_requested=True)
            ).rowcount
        if not found:
            raise self._missing(run_id)

    def register_runner(self, runner_id: str, run_id: str, host: str, pid: int) -> None:
        now = time.time()
        with db.write(self.engine) as conn:
            conn.execute(
                insert(runners).values(
                    id=runner_id,
                    run_id=run_id,
                    host=host,
                    pid=pid,
                    started_at=now,
                    heartbeat_at=now,
                )
            )

    def heartbeat(self, runner_id: str) -> None:
        with db.write(self.engine) as conn:
            conn.execute(
                update(runners).where(runners.c.id == runner_id).values(heartbeat_at=time.time())
            )

    def retire_runner(self, runner_id: str) -> None:
        with db.write(self.engine) as conn:
            conn.execute(delete(runners).where(runners.c.id == runner_id))

    def external_artifact(self, uri: str, fingerprint: str, size: int | None, new_id: str) -> str:
        """The id of the external artifact (``uri`` at ``fingerprint``), made if new."""
        query = select(artifacts.c.id).where(
            artifacts.c.uri == uri,
            artifacts.c.fingerprint == fingerprint,
            artifacts.c.kind == "external",
        )
        with db.write(self.engine) as conn:
            found = conn.execute(query).scalar()
            if found:
                return found
            conn.execute(
                insert(artifacts).values(
                    id=new_id,
                    run_id=None,
                    task=None,
                    name=None,
                    kind="external",
                    uri=uri,
                    fingerprint=fingerprint,
                    size=size,
                    created_at=time.time(),
                )
            )
        return new_id

    # ------------------------------------------------------------------ reading

    def run(self, run_id: str) -> RunRecord:
        with self.engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
            if row is None:
                row = conn.execute(select(runs).where(runs.c.id.like(f"{run_id}%")).limit(2)).all()
                if len(row) != 1:
                    raise self._missing(run_id, ambiguous=len(row) > 1)
                row = row[0]
        return _record(RunRecord, row)

    def list_runs(self, limit: int = 20, pipeline: str | None = None) -> list[RunRecord]:
        query = select(runs).order_by(runs.c.created_at.desc()).limit(limit)
        if pipeline:
            query = query.where(runs.c.pipeline == pipeline)
        with self.engine.connect() as conn:
            return [_record(RunRecord, row) for row in conn.execute(query)]

    def tasks(self, run_id: str) -> list[TaskRecord]:
        query = select(tasks).where(tasks.c.run_id == run_id).order_by(tasks.c.position)
        with self.engine.connect() as conn:
            return [_record(TaskRecord, row) for row in conn.execute(query)]

    def attempts(self, run_id: str, task: str | None = None) -> list[AttemptRecord]:
        query = select(attempts).where(attempts.c.run_id == run_id)
        if task is not None:
            query = query.where(attempts.c.task == task)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(attempts.c.task, attempts.c.number))
            return [_record(AttemptRecord, row) for row in rows]

    def events(self, run_id: str) -> list[dict[str, Any]]:
        query = select(events).where(events.c.run_id == run_id).order_by(events.c.id)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def runners(self, run_id: str | None = None) -> dict[str, tuple[str, int, float]]:
        """{runner id: (host, pid, last heartbeat)} of the runners alive or not yet retired."""
        query = select(runners.c.id, runners.c.host, runners.c.pid, runners.c.heartbeat_at)
        if run_id is not None:
            query = query.where(runners.c.run_id == run_id)
        with self.engine.connect() as conn:
            return {row.id: (row.host, row.pid, row.heartbeat_at) for row in conn.execute(query)}

    def artifact(self, artifact_id: str) -> ArtifactRecord:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(artifacts).where(artifacts.c.id.like(f"{artifact_id}%")).limit(2)
            ).all()
        exact = [r for r in rows if r.id == artifact_id]
        if exact or len(rows) == 1:
            return _record(ArtifactRecord, (exact or rows)[0])
        raise RunNotFoundError(
            f"no artifact {artifact_id!r}" + (" (the prefix is ambiguous)" if rows else ""),
            hint="see the ids with 'stagewise runs show RUN --json'",
        )

    def artifacts_of(
        self, run_id: str, task: str | None = None, direction: str = "out"
    ) -> dict[tuple[str, str], ArtifactRecord]:
        """{(task, name): artifact} bound to ``run_id``'s tasks in ``direction``."""
        query = (
            select(
                bindings.c.task.label("bound_task"), bindings.c.name.label("bound_name"), artifacts
            )
            .join(artifacts, artifacts.c.id == bindings.c.artifact_id)
            .where(bindings.c.run_id == run_id, bindings.c.direction == direction)
        )
        if task is not None:
            query = query.where(bindings.c.task == task)
        with self.engine.connect() as conn:
            return {
                (row.bound_task, row.bound_name): _record(ArtifactRecord, row)
                for row in conn.execute(query)
            }

    def readers_and_writer(self, artifact: ArtifactRecord) -> dict[str, list[ArtifactRecord]]:
        """What the task that wrote ``artifact`` read."""
        if artifact.run_id is None:
            return {"inputs": []}
        found = self.artifacts_of(artifact.run_id, artifact.task, "in")
        return {"inputs": list(found.values())}

    def cached_outputs(
        self, pipeline: str
    ) -> dict[str, tuple[str, str, dict[str, ArtifactRecord]]]:
        """{cache_key: (run_id, task, {output: artifact})} of every succeeded task of
        ``pipeline``'s runs, newest last (so a later run's entry wins)."""
        query = (
            select(
                tasks.c.cache_key,
                tasks.c.run_id.label("task_run"),
                tasks.c.name.label("task_name"),
                bindings.c.name.label("output"),
                artifacts,
            )
            .join(runs, runs.c.id == tasks.c.run_id)
            .outerjoin(
                bindings,
                and_(
                    bindings.c.run_id == tasks.c.run_id,
                    bindings.c.task == tasks.c.name,
                    bindings.c.direction == "out",
                ),
            )
            .outerjoin(artifacts, artifacts.c.id == bindings.c.artifact_id)
            .where(
                runs.c.pipeline == pipeline,
                tasks.c.state == "succeeded",
                tasks.c.cache_key.is_not(None),
            )
            .order_by(tasks.c.finished_at)
        )
        found: dict[str, tuple[str, str, dict[str, ArtifactRecord]]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                entry = found.get(row.cache_key)
                if entry is None or entry[0] != row.task_run:
                    entry = (row.task_run, row.task_name, {})
                    found[row.cache_key] = entry
                if row.output is not None and row.id is not None:
                    entry[2][row.output] = _record(ArtifactRecord, row)
        return found

    def _missing(self, run_id: str, ambiguous: bool = False) -> PipelineError:
        what = "matches more than one run" if ambiguous else "is not in the metadata database"
        return RunNotFoundError(
            f"run {run_id!r} {what}",
            location=db.display_url(self.url),
            hint="list runs with 'stagewise runs list'; set STAGEWISE_DB_URL or --home if the "
            "run was made with another database",
        )
