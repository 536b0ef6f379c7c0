"""The metadata database's contract, run on SQLite and on PostgreSQL: the migrations build
store/tables.py, and every RunStore call round trips (concurrency is in
test_database_concurrency.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa

from stagewise.errors import RunNotFoundError
from stagewise.store import db
from stagewise.store.runs import Changes, Claim, RunStore
from tests.store.test_db import actual_schema, expected_schema, versions

SPEC = {"apiVersion": "stagewise/v1", "kind": "Pipeline", "spec": {"note": "ünï 数据", "n": [1]}}


def new_run(
    store: RunStore, run_id: str, names: list[str], pipeline: str = "demo", **extra: Any
) -> None:
    store.create_run(
        {
            "id": run_id,
            "pipeline": pipeline,
            "pipeline_version": "1",
            "state": "running",
            "spec": SPEC,
            "source": "pipeline.yaml",
            "overrides": ["lr=0.1"],
            "executor": "local",
            "output_dir": f"/out/{run_id}",
            "options": {"no_cache": False, "mounts": {"/data": "/mnt"}},
            **extra,
        },
        [{"name": n, "position": i, "state": "pending"} for i, n in enumerate(names)],
    )


def artifact(run_id: str | None, task: str | None, name: str, uri: str, key: str) -> dict:
    return {
        "id": key,
        "run_id": run_id,
        "task": task,
        "name": name,
        "kind": "output",
        "uri": uri,
        "fingerprint": f"fp-{key}",
        "size": 3,
        "created_at": time.time(),
    }


def binding(run_id: str, task: str, direction: str, name: str, artifact_id: str) -> dict:
    return {
        "run_id": run_id,
        "task": task,
        "direction": direction,
        "name": name,
        "artifact_id": artifact_id,
    }


# ---------------------------------------------------------------------- schema


def test_migrations_build_exactly_the_tables_on_each_backend(database_url: str) -> None:
    engine = db.engine(database_url)

    assert actual_schema(engine) == expected_schema()
    assert versions(engine) == [db.HEAD]


# ---------------------------------------------------------------------- round trips


def test_a_run_and_its_tasks_round_trip(database_url: str) -> None:
    store = RunStore(database_url)
    new_run(store, "20260101-000000-aaaaaa", ["prepare", "train", "evaluate"])

    run = store.run("20260101-000000-aaaaaa")
    assert (run.pipeline, run.pipeline_version, run.state) == ("demo", "1", "running")
    assert run.spec == SPEC
    assert run.overrides == ["lr=0.1"]
    assert run.options == {"no_cache": False, "mounts": {"/data": "/mnt"}}
    assert (run.source, run.executor, run.output_dir) == (
        "pipeline.yaml",
        "local",
        "/out/20260101-000000-aaaaaa",
    )
    assert run.cancel_requested is False
    assert run.finished_at is None and run.error is None
    assert abs(run.created_at - time.time()) < 60
    assert store.run("20260101-000000-a") == run  # a unique prefix finds it

    tasks = store.tasks(run.id)
    assert [t.name for t in tasks] == ["prepare", "train", "evaluate"]
    assert {(t.state, t.attempts, t.failures, t.runner_id) for t in tasks} == {
        ("pending", 0, 0, None)
    }
    assert [e["event"] for e in store.events(run.id)] == ["run_created"]


def test_an_unknown_or_ambiguous_run_is_a_clear_error(database_url: str) -> None:
    store = RunStore(database_url)
    new_run(store, "r-1", ["a"])
    new_run(store, "r-2", ["a"])

    with pytest.raises(RunNotFoundError, match="'nope' is not in the metadata database"):
        store.run("nope")
    with pytest.raises(RunNotFoundError, match="matches more than one run"):
        store.run("r-")
    with pytest.raises(RunNotFoundError):
        store.request_cancel("nope")


def test_list_runs_newest_first_with_limit_and_pipeline(database_url: str) -> None:
    store = RunStore(database_url)
    for i in range(4):
        new_run(store, f"run-{i}", ["a"], pipeline="even" if i % 2 == 0 else "odd")

    assert [r.id for r in store.list_runs()] == ["run-3", "run-2", "run-1", "run-0"]
    assert [r.id for r in store.list_runs(limit=2)] == ["run-3", "run-2"]
    assert [r.id for r in store.list_runs(pipeline="even")] == ["run-2", "run-0"]


def test_claims_attempts_and_updates_round_trip(database_url: str) -> None:
    store = RunStore(database_url)
    new_run(store, "run", ["a", "b", "c"])

    changes = Changes(claims=[Claim("a", log="/logs/a.{attempt}.log"), Claim("b")])
    assert store.apply("run", "runner-1", changes) == {"a": (1, 0), "b": (1, 0)}
    # Running tasks are no longer claimable, by the same runner or another.
    assert store.apply("run", "runner-2", Changes(claims=[Claim("a"), Claim("c")])) == {"c": (1, 0)}

    done = Changes()
    done.tasks.append(("a", {"state": "succeeded", "finished_at": 5.0, "result": {"acc": 0.5}}))
    done.attempts.append(("a", 1, {"state": "succeeded", "finished_at": 5.0}))
    done.tasks.append(("b", {"state": "retrying", "failures": 1, "not_before": 7.5, "error": "x"}))
    done.attempts.append(("b", 1, {"state": "failed", "finished_at": 5.0, "error": "boom"}))
    done.run.update(error="still going")
    done.event("run", "task_succeeded", "a", attempt=1, seconds=0.25)
    store.apply("run", "runner-1", done)

    assert store.apply("run", "runner-1", Changes(claims=[Claim("a"), Claim("b")])) == {"b": (2, 1)}
    tasks = {t.name: t for t in store.tasks("run")}
    assert (tasks["a"].state, tasks["a"].attempts, tasks["a"].result) == (
        "succeeded",
        1,
        {"acc": 0.5},
    )
    assert (tasks["b"].state, tasks["b"].attempts, tasks["b"].failures) == ("running", 2, 1)
    assert tasks["b"].not_before is None  # a claim clears the retry's wait
    assert (tasks["c"].runner_id, tasks["b"].runner_id) == ("runner-2", "runner-1")

    attempts = store.attempts("run")
    assert [(a.task, a.number, a.state) for a in attempts] == [
        ("a", 1, "succeeded"),
        ("b", 1, "failed"),
        ("b", 2, "running"),
        ("c", 1, "running"),
    ]
    assert attempts[0].log == "/logs/a.1.log" and attempts[2].log is None
    assert attempts[1].error == "boom"
    assert [a.number for a in store.attempts("run", "b")] == [1, 2]
    assert store.run("run").error == "still going"

    events = store.events("run")
    assert [(e["event"], e["task"]) for e in events] == [
        ("run_created", None),
        ("task_started", "a"),
        ("task_started", "b"),
        ("task_started", "c"),
        ("task_succeeded", "a"),
        ("task_started", "b"),
    ]
    assert events[4]["data"] == {"attempt": 1, "seconds": 0.25}
    assert [e["data"]["attempt"] for e in events if e["event"] == "task_started"] == [1, 1, 1, 2]


def test_artifacts_bindings_and_lineage_round_trip(database_url: str) -> None:
    store = RunStore(database_url)
    new_run(store, "run", ["make", "use"])
    raw = store.external_artifact("/data/raw.csv", "fp-raw", 10, "raw-id")
    assert store.external_artifact("/data/raw.csv", "fp-raw", 10, "other-id") == raw == "raw-id"
    assert store.external_artifact("/data/raw.csv", "fp-changed", 11, "raw-2") == "raw-2"

    changes = Changes()
    changes.artifacts += [
        artifact("run", "make", "table", "/out/make/table", "aaaa1111"),
        artifact("run", "use", "model", "/out/use/model", "bbbb2222"),
    ]
    changes.bindings += [
        binding("run", "make", "in", "raw", raw),
        binding("run", "make", "out", "table", "aaaa1111"),
        binding("run", "use", "in", "table", "aaaa1111"),
        binding("run", "use", "out", "model", "bbbb2222"),
    ]
    store.apply("run", "runner", changes)

    outputs = store.artifacts_of("run")
    assert {k: v.uri for k, v in outputs.items()} == {
        ("make", "table"): "/out/make/table",
        ("use", "model"): "/out/use/model",
    }
    assert list(store.artifacts_of("run", "use", "in")) == [("use", "table")]
    assert store.artifact("bbbb").id == "bbbb2222"  # a prefix
    model = store.artifact("bbbb2222")
    assert (model.run_id, model.task, model.name, model.size) == ("run", "use", "model", 3)
    assert [a.id for a in store.readers_and_writer(model)["inputs"]] == ["aaaa1111"]
    assert store.readers_and_writer(store.artifact("raw-id")) == {"inputs": []}
    assert store.artifact("raw-id").kind == "external"
    with pytest.raises(RunNotFoundError, match="no artifact"):
        store.artifact("zzzz")


def test_cached_outputs_hold_succeeded_tasks_newest_run_winning(database_url: str) -> None:
    store = RunStore(database_url)
    for run_id, state in (("old", "succeeded"), ("new", "succeeded"), ("bad", "failed")):
        new_run(store, run_id, ["t", "quiet"])
        changes = Changes()
        changes.tasks.append(("t", {"state": state, "cache_key": "k1", "finished_at": time.time()}))
        changes.tasks.append(
            ("quiet", {"state": state, "cache_key": "k2", "finished_at": time.time()})
        )
        changes.artifacts.append(artifact(run_id, "t", "out", f"/{run_id}/t/out", f"{run_id}-a"))
        changes.bindings.append(binding(run_id, "t", "out", "out", f"{run_id}-a"))
        store.apply(run_id, "runner", changes)
    new_run(store, "other", ["t"], pipeline="another")
    store.apply("other", "r", Changes(tasks=[("t", {"state": "succeeded", "cache_key": "k9"})]))

    found = store.cached_outputs("demo")
    assert set(found) == {"k1", "k2"}
    run_id, task, outputs = found["k1"]
    assert (run_id, task) == ("new", "t")
    assert {name: a.uri for name, a in outputs.items()} == {"out": "/new/t/out"}
    assert found["k2"][0] == "new" and found["k2"][2] == {}  # a task without outputs


def test_runners_and_cancel_requests_round_trip(database_url: str) -> None:
    store = RunStore(database_url)
    new_run(store, "run", ["a"])
    store.register_runner("runner-1", "run", "host-a", 123)
    first = store.runners("run")["runner-1"]
    time.sleep(0.01)
    store.heartbeat("runner-1")

    host, pid, heartbeat = store.runners("run")["runner-1"]
    assert (host, pid) == ("host-a", 123) and heartbeat > first[2]
    assert store.runners("elsewhere") == {}
    store.request_cancel("run")
    assert store.run("run").cancel_requested is True
    store.retire_runner("runner-1")
    assert store.runners() == {}


def test_the_sqlite_database_runs_in_wal_mode(tmp_path) -> None:
    engine = db.engine(f"sqlite:///{tmp_path / 'wal.db'}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
    db.dispose_all()
