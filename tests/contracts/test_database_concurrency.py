"""The metadata database under concurrency, on SQLite and on PostgreSQL: processes that
open a new database at once migrate it once, and processes that claim and update the same
tasks at once never share a claim, never lose an update, and never see 'database is
locked'."""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from stagewise.store import db
from stagewise.store.runs import CLAIMABLE, Changes, Claim, RunStore
from tests.contracts.conftest import postgres_schema
from tests.contracts.test_database import new_run
from tests.store.test_db import versions


def _entry(function: Callable[..., Any], args: tuple, barrier: Any, results: Any, i: int) -> None:
    try:
        barrier.wait(timeout=120)  # everyone imported and ready: start together
        results.put((i, function(*args), None))
    except BaseException:  # reported to the parent, which fails the test with it
        results.put((i, None, traceback.format_exc()))


def at_once(function: Callable[..., Any], calls: list[tuple]) -> list[Any]:
    """``function(*args)`` for each of ``calls``, each in a fresh (spawned) process, all
    starting at the same moment; their results in order."""
    db.dispose_all()  # no pooled connection of ours crosses into the children
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(calls))
    results = context.Queue()
    processes = [
        context.Process(target=_entry, args=(function, args, barrier, results, i))
        for i, args in enumerate(calls)
    ]
    for process in processes:
        process.start()
    try:
        found = {i: (value, error) for i, value, error in (results.get(timeout=240) for _ in calls)}
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.exitcode is None:
                process.kill()
                process.join()
    errors = [error for _, error in found.values() if error]
    assert not errors, "a child process failed:\n" + "\n".join(errors)
    return [found[i][0] for i in range(len(calls))]


def _open(url: str) -> str:
    return str(db.current_revision(db.engine(url)))


def test_processes_opening_a_new_database_at_once_migrate_it_once(database_url: str) -> None:
    found = at_once(_open, [(database_url,)] * 3)

    assert found == [db.HEAD] * 3
    assert versions(db.engine(database_url)) == [db.HEAD]


ROUNDS = 3  # each task is claimed, put back for a retry, and claimed again, ROUNDS times


def _claimer(url: str, run_id: str, seed: int) -> tuple[list, str | None]:
    """Claims whatever is claimable, 10 at a time, until every task is done; a won claim
    goes back for a retry until its attempt number reaches ROUNDS. Errors come back as
    text so that the parent can show them."""
    won: list[tuple[str, int]] = []
    try:
        store = RunStore(url)
        rng = random.Random(seed)
        runner = f"claimer-{seed}"
        while True:
            tasks = store.tasks(run_id)
            if all(t.state == "succeeded" for t in tasks):
                return won, None
            open_ = [t.name for t in tasks if t.state in CLAIMABLE]
            # Ten at random, claimed in name order as a runner claims in plan order: rows
            # locked in one order by everyone (test_claims_in_opposite_orders_... shows why).
            batch = sorted(rng.sample(open_, min(10, len(open_))))
            got = store.apply(run_id, runner, Changes(claims=[Claim(n) for n in batch]))
            done = Changes()
            for name, (number, _failures) in got.items():
                won.append((name, number))
                last = number >= ROUNDS
                done.tasks.append((name, {"state": "succeeded" if last else "retrying"}))
                done.attempts.append((name, number, {"state": "succeeded" if last else "failed"}))
                done.event(run_id, "claimed", name, attempt=number, runner=runner)
            if done:
                store.apply(run_id, runner, done)
            # A runner spends a moment between turns (launching, waiting on its workers);
            # without it, SQLite's busy handler may let one process win every time.
            time.sleep(0.005)
    except Exception:
        return won, traceback.format_exc()


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_claiming_the_same_tasks_never_share_one(
    database_url: str, processes: int
) -> None:
    names = [f"t{i:03d}" for i in range(100)]
    store = RunStore(database_url)
    new_run(store, "run", names)

    results = at_once(_claimer, [(database_url, "run", seed) for seed in range(processes)])

    errors = [error for _, error in results if error]
    assert not errors, "a claimer failed:\n" + "\n".join(errors)
    claims = [(name, number, seed) for seed, (won, _) in enumerate(results) for name, number in won]
    # Every (task, attempt) was won exactly once, by exactly one process.
    assert sorted((n, k) for n, k, _ in claims) == [
        (n, k) for n in names for k in range(1, ROUNDS + 1)
    ]
    # The claims were contended: more than one process won some (SQLite does not promise
    # fairness, so not necessarily every one).
    assert len({seed for _, _, seed in claims}) >= 2
    store = RunStore(database_url)
    tasks = store.tasks("run")
    assert {(t.state, t.attempts) for t in tasks} == {("succeeded", ROUNDS)}  # no lost increment
    attempts = store.attempts("run")
    assert len(attempts) == len(names) * ROUNDS
    owner = {(n, k): f"claimer-{seed}" for n, k, seed in claims}
    assert all(owner[(a.task, a.number)] == a.runner_id for a in attempts)
    events = store.events("run")
    assert sum(e["event"] == "task_started" for e in events) == len(names) * ROUNDS
    assert sum(e["event"] == "claimed" for e in events) == len(names) * ROUNDS


def _wait_for_lock_waiters(engine: sa.Engine, application: str, count: int) -> None:
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE application_name = :app AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(query, {"app": application}).scalar() >= count:
                return
        time.sleep(0.01)
    raise AssertionError(f"{count} claim(s) never waited for a row lock")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    # A fixture, not a call in the test: an unreachable server is a setup error.
    with postgres_schema() as url:
        yield url


def test_claims_in_opposite_orders_do_not_deadlock_on_postgresql(postgres_url: str) -> None:
    application = postgres_url.rsplit("%3D", 1)[1]  # the schema's name
    url = f"{postgres_url}&application_name={application}"
    store = RunStore(url)
    new_run(store, "run", ["x", "y"])
    outcomes: dict[str, Any] = {}

    def claim(runner: str, order: list[str]) -> None:
        try:
            outcomes[runner] = store.apply("run", runner, Changes(claims=[Claim(n) for n in order]))
        except Exception as exc:
            outcomes[runner] = exc

    holder = sa.create_engine(url, poolclass=NullPool)
    # Hold x's row so that A waits on x first, then B takes y and queues on x behind A:
    # released, A gets x and waits on y (B's), B waits on x (A's).
    with holder.connect() as conn:
        conn.execute(sa.text("UPDATE tasks SET error = 'held' WHERE name = 'x'"))
        first = threading.Thread(target=claim, args=("A", ["x", "y"]))
        first.start()
        _wait_for_lock_waiters(holder, application, 1)
        second = threading.Thread(target=claim, args=("B", ["y", "x"]))
        second.start()
        _wait_for_lock_waiters(holder, application, 2)
        conn.commit()
    first.join(60)
    second.join(60)
    holder.dispose()

    errors = [repr(o) for o in outcomes.values() if isinstance(o, Exception)]
    assert not errors, errors
    assert sorted(name for won in outcomes.values() for name in won) == ["x", "y"]
