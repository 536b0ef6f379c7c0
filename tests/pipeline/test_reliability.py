"""Runs that survive crashes (issue 4, reliability): a runner SIGKILLed at random moments
resumes without redoing finished work, two runners share one run without running a task
twice, and a task that always fails ends failed after exactly its retries.

Runners under test run in child processes (``python -m tests.pipeline.reliability_tasks``,
driven by ``reliability_harness``) so that they can be killed; resumes run in this process.
Every task appends its name to a ledger file, which tells what really ran, whatever the
database says. The last tests pin bugs found while writing them.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stagewise.pipeline.attempt_log import read_result
from stagewise.pipeline.runner import RunOptions, resume_run, run_pipeline, start_run
from stagewise.pipeline.spec import load_pipeline
from stagewise.store.runs import RunStore
from tests.contracts.conftest import backend_url, postgres_schema
from tests.pipeline import reliability_tasks as rt
from tests.pipeline.reliability_harness import (
    SEED,
    finish,
    kill_and_resume_many,
    kill_runner,
    run_folder_problems,
    spawn,
    start_together,
    stopping,
    wait_for,
)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    with backend_url("sqlite", tmp_path) as url:
        yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the resumes' workers run here
    monkeypatch.delenv("STAGEWISE_DB_URL", raising=False)


def test_a_runner_killed_at_random_resumes_without_redoing_finished_work(
    sqlite_url: str, tmp_path: Path
) -> None:
    kill_and_resume_many(sqlite_url, tmp_path, 30)


def test_a_runner_killed_at_random_resumes_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    kill_and_resume_many(postgres_url, tmp_path, 5)


# ---------------------------------------------------------------------- one run, two runners


@pytest.fixture(params=["sqlite", "postgresql"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with backend_url(request.param, tmp_path) as url:
        yield url


def test_two_runners_resuming_one_run_never_run_a_task_twice(any_url: str, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    ledger = tmp_path / "ledger"
    edges = rt.fan_out(40)
    pipeline = rt.write_pipeline(
        tmp_path / "p.yaml", "shared", edges, ledger, [rng.uniform(0.01, 0.05) for _ in edges]
    )
    store = RunStore(any_url)
    options = RunOptions(outputs=str(tmp_path / "outputs"), workers=2)
    run_id = start_run(load_pipeline(pipeline).plan, options=options, store=store)
    go = tmp_path / "go"
    logs = [tmp_path / f"runner{i}.log" for i in range(2)]
    with stopping() as children:
        children += [spawn(["resume", run_id, str(go)], any_url, log) for log in logs]
        start_together(children, go)
        lines = finish(children, logs)

    names = [n for n, _ in edges]
    assert lines == [f"{run_id} succeeded"] * 2
    assert Counter(rt.read_ledger(ledger)) == Counter(names)  # each task ran once
    attempts = store.attempts(run_id)
    assert sorted((a.task, a.number, a.state) for a in attempts) == sorted(
        (n, 1, "succeeded") for n in names
    )
    assert {t.state for t in store.tasks(run_id)} == {"succeeded"}
    assert store.run(run_id).state == "succeeded"
    assert run_folder_problems(store.run(run_id), names) == []
    # Both runners took part (each has 2 workers; 38 leaves are more than one can hold).
    assert len({a.runner_id for a in attempts}) == 2


def test_two_runs_of_one_pipeline_at_once_both_succeed(any_url: str, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    ledger = tmp_path / "ledger"
    edges = rt.mixed_dag()
    pipeline = rt.write_pipeline(
        tmp_path / "p.yaml", "twice", edges, ledger, [rng.uniform(0.01, 0.05) for _ in edges]
    )
    go = tmp_path / "go"
    logs = [tmp_path / f"run{i}.log" for i in range(2)]
    # Output roots of their own: runs started in one second would otherwise share a folder
    # (test_two_runs_started_in_one_second_get_their_own_folders).
    args = [["run", str(pipeline), str(tmp_path / f"outputs{i}"), "2", str(go)] for i in (0, 1)]
    with stopping() as children:
        children += [spawn(a, any_url, log) for a, log in zip(args, logs, strict=True)]
        start_together(children, go)
        lines = finish(children, logs)

    store = RunStore(any_url)
    run_ids = [line.split()[0] for line in lines]
    assert [line.split()[1] for line in lines] == ["succeeded"] * 2
    assert len(set(run_ids)) == 2
    for run_id in run_ids:
        assert {t.state for t in store.tasks(run_id)} <= {"succeeded", "cached"}
        outputs = store.artifacts_of(run_id)
        assert sorted(task for task, _ in outputs) == sorted(n for n, _ in edges)
        assert all(Path(a.uri).read_text() == task for (task, _), a in outputs.items())
    # Every task ran in each run, unless the second run took it from the first's cache.
    assert set(Counter(rt.read_ledger(ledger)).values()) <= {1, 2}


def test_two_runs_started_in_one_second_get_their_own_folders(
    sqlite_url: str, tmp_path: Path
) -> None:
    pipeline = rt.write_pipeline(tmp_path / "p.yaml", "same", [("a", [])], tmp_path / "l", [0])
    planned = load_pipeline(pipeline).plan
    store = RunStore(sqlite_url)
    options = RunOptions(outputs=str(tmp_path / "outputs"))
    for _ in range(5):  # until both land in one second
        first, second = (store.run(start_run(planned, options=options, store=store)) for _ in "ab")
        if first.id[:15] == second.id[:15]:
            break

    assert first.output_dir != second.output_dir


# ---------------------------------------------------------------------- failures and retries


def test_a_task_that_always_fails_ends_failed_after_exactly_its_retries(
    sqlite_url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    bad = {
        "name": "bad",
        "function": f"{rt.__name__}:fail_always",
        "retries": 2,
        "retry_delay": 0.2,
    }
    pipeline = rt.write_pipeline(
        tmp_path / "p.yaml",
        "failing",
        [("after", []), ("after2", ["after"]), ("free", [])],
        ledger,
        [0, 0, 0],
        extra=[bad],
        dependencies=[("bad", "after")],
    )
    store = RunStore(sqlite_url)
    options = RunOptions(outputs=str(tmp_path / "outputs"), workers=2)

    record = run_pipeline(load_pipeline(pipeline).plan, options=options, store=store)

    assert record.state == "failed"
    assert "bad" in (record.error or "")
    assert Counter(rt.read_ledger(ledger)) == {"bad": 3, "free": 1}  # dependants never ran
    tasks = {t.name: t for t in store.tasks(record.id)}
    assert {n: t.state for n, t in tasks.items()} == {
        "after": "skipped",
        "after2": "skipped",
        "free": "succeeded",
        "bad": "failed",
    }
    assert (tasks["bad"].attempts, tasks["bad"].failures) == (3, 3)
    assert (tasks["after"].attempts, tasks["after2"].attempts) == (0, 0)
    attempts = store.attempts(record.id, "bad")
    assert [(a.number, a.state) for a in attempts] == [(1, "failed"), (2, "failed"), (3, "failed")]
    assert all("bad always fails" in (a.error or "") for a in attempts)
    # Exponential backoff: retry_delay, then twice that, between an attempt's end and the
    # next one's start.
    gaps = [b.started_at - a.finished_at for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.2 - 1e-3 and gaps[1] >= 0.4 - 1e-3, gaps
    retrying = [
        e["data"]["delay"] for e in store.events(record.id) if e["event"] == "task_retrying"
    ]
    assert retrying == [0.2, 0.4]
    assert store.attempts(record.id, "after") == []


# ---------------------------------------------------------------------- killed at a known moment


def one_special_task(tmp_path: Path, function: str, name: str) -> tuple[Path, Path, Path]:
    """A pipeline ``first`` (calling ``function``) -> ``second`` -> ``third``."""
    ledger, once = tmp_path / "ledger", tmp_path / "once"
    first = {
        "name": "first",
        "function": f"{rt.__name__}:{function}",
        "parameters": {"once": str(once)},
        "outputs": [{"name": "out"}],
    }
    pipeline = rt.write_pipeline(
        tmp_path / "p.yaml",
        name,
        [("second", ["first"]), ("third", ["second"])],
        ledger,
        [0, 0],
        extra=[first],
    )
    return pipeline, ledger, once


def start_and_kill_when(
    url: str, tmp_path: Path, pipeline: Path, ready: Callable[[Path], bool]
) -> tuple[RunStore, str]:
    log = tmp_path / "runner.log"
    with stopping() as children:
        child = spawn(["run", str(pipeline), str(tmp_path / "outputs"), "2"], url, log)
        children.append(child)
        wait_for(lambda: ready(tmp_path / "outputs"), child, log, "the moment to kill")
        assert kill_runner(child), "the runner finished before it could be killed"
    store = RunStore(url)
    (run,) = store.list_runs()
    return store, run.id


def test_a_success_the_runner_did_not_record_is_adopted_not_rerun(
    sqlite_url: str, tmp_path: Path
) -> None:
    pipeline, ledger, _ = one_special_task(tmp_path, "stop_runner_after", "adopt")
    # The task froze its runner (SIGSTOP) before returning; once the worker has journalled
    # the attempt's end, the success exists on disk but not in the database.
    store, run_id = start_and_kill_when(
        sqlite_url,
        tmp_path,
        pipeline,
        lambda out: any(read_result(p, "first", 1) for p in out.glob("adopt/*/*/logs")),
    )
    assert {t.name: t.state for t in store.tasks(run_id)}["first"] == "running"

    record = resume_run(run_id, store=store)

    assert record.state == "succeeded"
    assert Counter(rt.read_ledger(ledger)) == {"first": 1, "second": 1, "third": 1}
    assert [(a.number, a.state) for a in store.attempts(run_id, "first")] == [(1, "succeeded")]
    assert "task_adopted" in [e["event"] for e in store.events(run_id) if e["task"] == "first"]
    assert run_folder_problems(record, ["first", "second", "third"]) == []


def test_an_interrupted_attempt_leaves_no_temporary_output_behind(
    sqlite_url: str, tmp_path: Path
) -> None:
    pipeline, ledger, once = one_special_task(tmp_path, "hang_after_writing", "hang")
    store, run_id = start_and_kill_when(sqlite_url, tmp_path, pipeline, lambda _: once.exists())
    task_folder = Path(store.run(run_id).output_dir) / "first"
    # Written, but only under its temporary name: never taken as done.
    assert [p.name for p in task_folder.iterdir()] == [f".out.partial-{run_id}-a1"]

    record = resume_run(run_id, store=store)

    assert record.state == "succeeded"
    assert Counter(rt.read_ledger(ledger)) == {"first": 2, "second": 1, "third": 1}
    assert [(a.number, a.state) for a in store.attempts(run_id, "first")] == [
        (1, "interrupted"),
        (2, "succeeded"),
    ]
    assert run_folder_problems(record, ["first", "second", "third"]) == []


def test_a_cache_hit_gives_each_of_two_alike_tasks_its_own_output(
    sqlite_url: str, tmp_path: Path
) -> None:
    twins = [
        {"name": name, "function": f"{rt.__name__}:step", "outputs": [{"name": "out"}]}
        for name in ("a", "b")
    ]
    pipeline = rt.write_pipeline(tmp_path / "p.yaml", "twins", [], tmp_path / "l", [], twins)
    planned = load_pipeline(pipeline).plan
    store = RunStore(sqlite_url)
    options = RunOptions(outputs=str(tmp_path / "outputs"), workers=2)

    runs = [run_pipeline(planned, options=options, store=store) for _ in "12"]

    assert [r.state for r in runs] == ["succeeded", "succeeded"]
    assert {t.state for t in store.tasks(runs[1].id)} == {"cached"}
    for record in runs:
        outputs = store.artifacts_of(record.id)
        assert {task: Path(a.uri).read_text() for (task, _), a in outputs.items()} == {
            "a": "a",
            "b": "b",
        }
