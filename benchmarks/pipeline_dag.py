# ruff: noqa: T201
"""Issue 4's DAG-engine goals (and P1-P6 of the performance anchors): overhead per task.

A DAG of N no-op Python tasks (default 1,000), as a chain and as a wide fan-out (1 root ->
N-2 -> 1 sink), on:

- stagewise local: the real ``run_pipeline`` on a plan built with the SDK's ``Pipeline``
  from a plain function in a module file written to the workdir (plain, not ``@task``:
  Prefect's venv imports the same module and has no stagewise), the default SQLite
  database in a temporary ``STAGEWISE_HOME``, every state change persisted and every
  task's log captured; end to end, the warm worker pool's start included;
- stagewise ray: the same with ``RunOptions(executor="ray")`` on a Ray started first in
  the same process (the executor joins it), as bare Ray's tasks are timed after
  ``ray.init``;
- bare Ray tasks: chain ``ray.get(f.remote(i))`` one at a time; fan-out ``ray.get`` of the
  root, then of the N-2 middle tasks at once, then of the sink;
- Prefect 3 local: the same function as a ``@task`` in a ``@flow`` (the chain calls tasks
  one after another; the fan-out submits to the default thread pool with ``wait_for``), on
  its ephemeral server, in its own venv (``--peers-venv``, made with pip on first use).

Also: a cache-hit re-run of the same DAG (every task answered from the cache), import to
the first task's result in a fresh process, the cost of persisting one task's state
(``RunStore.apply`` on batches like the runner's, nothing executed) and of capturing its
log (``worker.execute`` with and without env and output capture), and references: a
graphlib loop, ``ProcessPoolExecutor``, a raw pipe round trip, process start times.

Every engine runs in its own fresh child process, once per round; rounds interleave the
engines, so that a slow spell of the shared machine hits all of them. Figures are medians
over rounds.

    .venv/bin/python benchmarks/pipeline_dag.py            # ~8-10 min (Prefect is slow)
    .venv/bin/python benchmarks/pipeline_dag.py --quick    # smoke run, under a minute
    .venv/bin/python benchmarks/pipeline_dag.py --profile  # + cProfile of both chains
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _report import peer_venv, run_child, table, verdict

MODULE = "sw_bench_dag_tasks"  # the task functions' module, written to the workdir
MODULE_SOURCE = '''"""No-op tasks for benchmarks/pipeline_dag.py (written by it)."""


def noop(i: int = 0) -> None:
    """A task that does nothing: what is left of its time is the engine's overhead."""
    return None
'''
PREFECT_PINS = ["prefect>=3.8,<3.9", "fastapi==0.139.*", "ray==2.60.*"]
SHAPES = ("chain", "fanout")
WORKER_IMPORT = "import stagewise.pipeline.executors.local"  # what a local worker imports
EXECUTE_VARIANTS = {
    "bare": "worker.execute: no output capture, no env",
    "env": "worker.execute + env (3 variables set and restored)",
    "log": "worker.execute + output capture (fds 1 and 2 to the worker's scratch) + journal",
    "full": "worker.execute as the runner sends it (env + capture + journal)",
}
RAY_OPTIONS = {"include_dashboard": False, "log_to_driver": False}  # as the executor's


def tasks_module(workdir: Path) -> Any:
    sys.path.insert(0, str(workdir))
    return importlib.import_module(MODULE)


def ray_executor_available() -> bool:
    try:
        return (
            importlib.util.find_spec("ray") is not None
            and importlib.util.find_spec("stagewise.pipeline.executors.ray") is not None
        )
    except ImportError:
        return False


# stagewise ------------------------------------------------------------------------------
def build(shape: str, n: int, name: str, function: Any) -> Any:
    """The DAG through the SDK: ``after=`` dependencies, one parameter per task (so that
    each task has its own cache key)."""
    from stagewise.pipeline import Pipeline

    pipeline = Pipeline(name)
    if shape == "chain":
        prev = None
        for i in range(n):
            prev = pipeline.add(function, name=f"t{i}", after=[prev] if prev else [], i=i)
    elif n == 1:
        pipeline.add(function, name="t0", i=0)
    else:
        root = pipeline.add(function, name="t0", i=0)
        middle = [pipeline.add(function, name=f"t{i}", after=[root], i=i) for i in range(1, n - 1)]
        pipeline.add(function, name=f"t{n - 1}", after=middle, i=n - 1)
    return pipeline.plan()


def states(record: Any) -> dict[str, int]:
    from stagewise.store.runs import RunStore

    found: dict[str, int] = {}
    for task in RunStore().tasks(record.id):
        found[task.state] = found.get(task.state, 0) + 1
    return found


def timed_run(planned: Any, options: Any, expect: str, n: int) -> float:
    from stagewise.pipeline.runner import run_pipeline

    began = time.perf_counter()
    record = run_pipeline(planned, options=options)
    took = time.perf_counter() - began
    found = states(record)
    if record.state != "succeeded" or found.get(expect) != n:
        raise RuntimeError(f"run {record.id}: {record.state} {record.error}; tasks {found}")
    return took


def child_stagewise(o: dict[str, Any]) -> dict[str, Any]:
    os.environ["STAGEWISE_HOME"] = o["home"]
    os.chdir(o["workdir"])
    module = tasks_module(Path(o["workdir"]))
    from stagewise.pipeline.runner import RunOptions
    from stagewise.store.runs import RunStore

    RunStore()  # creates and migrates the database: once per home, not per run
    out: dict[str, Any] = {}
    if o["executor"] == "ray":
        import ray

        began = time.perf_counter()
        ray.init(**RAY_OPTIONS)
        out["init"] = time.perf_counter() - began
    options = RunOptions(executor=o["executor"], outputs=o["outputs"])
    tag, n = o["tag"], o["n"]
    out["one"] = timed_run(build("chain", 1, f"one-{tag}", module.noop), options, "succeeded", 1)
    for shape in SHAPES:
        began = time.perf_counter()
        planned = build(shape, n, f"{shape}-{tag}", module.noop)
        out[f"plan_{shape}"] = time.perf_counter() - began
        out[shape] = timed_run(planned, options, "succeeded", n)
        if o["cached"]:  # the same pipeline again: every task from the cache
            out[f"cached_{shape}"] = timed_run(planned, options, "cached", n)
    return out


def child_profile(o: dict[str, Any]) -> dict[str, Any]:
    """cProfile of one chain run (the runner's process only; with Ray, after ray.init):
    the top entries by own and cumulative time."""
    import cProfile
    import io
    import pstats

    os.environ["STAGEWISE_HOME"] = o["home"]
    os.chdir(o["workdir"])
    module = tasks_module(Path(o["workdir"]))
    from stagewise.pipeline.runner import RunOptions, run_pipeline
    from stagewise.store.runs import RunStore

    RunStore()
    if o["executor"] == "ray":
        import ray

        ray.init(**RAY_OPTIONS)
    planned = build("chain", o["n"], f"profile-{o['tag']}", module.noop)
    profile = cProfile.Profile()
    began = time.perf_counter()
    profile.enable()
    run_pipeline(planned, options=RunOptions(executor=o["executor"], outputs=o["outputs"]))
    profile.disable()
    out: dict[str, Any] = {"seconds": time.perf_counter() - began}
    for key in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats(key).print_stats(o["top"])
        out[key] = text.getvalue()
    return out


def child_first(o: dict[str, Any]) -> dict[str, Any]:
    """Import to the first task's result: ``import stagewise.pipeline`` through the
    ``task_succeeded`` of a one-task pipeline (the tasks module is written beforehand).
    The listener's first events split the time: SDK import and build, then the database,
    plan and run record (``runner_started``), then the worker and the task."""
    began = time.perf_counter()
    import stagewise.pipeline

    imported = time.perf_counter()
    os.environ["STAGEWISE_HOME"] = o["home"]
    os.chdir(o["workdir"])
    module = tasks_module(Path(o["workdir"]))
    seen: dict[str, float] = {}

    def listen(event: str, task: str, data: dict[str, Any]) -> None:
        seen.setdefault(event, time.perf_counter() - began)

    pipeline = stagewise.pipeline.Pipeline(f"first-{o['tag']}")
    pipeline.add(module.noop, name="t0", i=0)
    built = time.perf_counter()
    record = pipeline.run(listener=listen, options=_options(o["outputs"]))
    done = time.perf_counter()
    if record.state != "succeeded" or "task_succeeded" not in seen:
        raise RuntimeError(f"run {record.id}: {record.state} {record.error}")
    return {
        "import": imported - began,
        "built": built - began,
        "runner_started": seen.get("runner_started", float("nan")),
        "task_started": seen.get("task_started", float("nan")),
        "first": seen["task_succeeded"],
        "run_done": done - began,
    }


def _options(outputs: str) -> Any:
    from stagewise.pipeline.runner import RunOptions

    return RunOptions(outputs=outputs)


def child_persist(o: dict[str, Any]) -> dict[str, Any]:
    """Per task: RunStore.apply of batches like the runner's (claim + the previous batch's
    task and attempt updates + events), nothing executed; and log capture in the worker."""
    os.environ["STAGEWISE_HOME"] = o["home"]
    module = tasks_module(Path(o["workdir"]))
    from stagewise.pipeline.worker import Work, execute
    from stagewise.store.runs import Changes, Claim, RunStore

    store = RunStore()
    n, logs = o["n"], Path(o["outputs"]) / f"persist-{o['tag']}"
    logs.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    for batch in o["batches"]:
        run_id = f"persist-{o['tag']}-b{batch}"
        store.create_run(
            {
                "id": run_id,
                "pipeline": f"persist-{o['tag']}",
                "pipeline_version": None,
                "state": "running",
                "spec": {},
                "source": None,
                "overrides": [],
                "executor": "local",
                "output_dir": str(logs),
                "options": {},
            },
            [{"name": f"t{i}", "position": i, "state": "pending"} for i in range(n)],
        )
        runner = f"bench:{os.getpid()}:persist-b{batch}"
        store.register_runner(runner, run_id, "bench", os.getpid())
        began = time.perf_counter()
        previous: list[str] = []
        for start in range(0, n + batch, batch):
            changes = Changes()
            now = time.time()
            for name in previous:  # the previous batch finished
                changes.attempts.append((name, 1, {"state": "succeeded", "finished_at": now}))
                changes.tasks.append(
                    (
                        name,
                        {
                            "state": "succeeded",
                            "finished_at": now,
                            "cache_key": "0" * 64,
                            "result": None,
                            "error": None,
                        },
                    )
                )
                changes.event(run_id, "task_succeeded", name, attempt=1, seconds=1e-5)
            previous = [f"t{i}" for i in range(start, min(start + batch, n))]
            for name in previous:
                changes.claims.append(Claim(name, log=str(logs / f"{name}.{{attempt}}.log")))
            if changes:
                won = store.apply(run_id, runner, changes)
                assert len(won) == len(previous)
        out[f"apply_b{batch}"] = (time.perf_counter() - began) / n

    def work(i: int, variant: str) -> Work:
        """A no-op attempt as the runner sends it ("full"), or with parts left out."""
        log = variant in ("log", "full")
        return Work(
            run_id="persist",
            task=f"t{i}",
            attempt=1,
            kind="call",
            target=f"{MODULE}:noop",
            kwargs={"i": i},
            env={"STAGEWISE_RUN_ID": "persist", "STAGEWISE_TASK": f"t{i}", "STAGEWISE_ATTEMPT": "1"}
            if variant in ("env", "full")
            else {},
            log=str(logs / f"t{i}.1.log") if log else None,
        )

    assert module.noop() is None
    execute(work(0, "full"))  # imports the function once
    for variant in EXECUTE_VARIANTS:
        items = [work(i, variant) for i in range(n)]
        began = time.perf_counter()
        for item in items:
            if not execute(item).ok:
                raise RuntimeError("a no-op task failed")
        out[f"execute_{variant}"] = (time.perf_counter() - began) / n
    return out


# references and peers -----------------------------------------------------------------------
def child_refs(o: dict[str, Any]) -> dict[str, Any]:
    """In-process floors: a graphlib DAG loop, ProcessPoolExecutor (2 warm workers), a raw
    pipe round trip to a forked process."""
    import graphlib
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, wait

    module = tasks_module(Path(o["workdir"]))
    n, out = o["n"], {}
    for shape in SHAPES:
        graph: dict[int, set[int]] = {}
        for i in range(n):
            if shape == "chain":
                graph[i] = {i - 1} if i else set()
            else:
                graph[i] = set() if i == 0 else ({0} if i < n - 1 else set(range(1, n - 1)))
        began = time.perf_counter()
        sorter = graphlib.TopologicalSorter(graph)
        sorter.prepare()
        while sorter.is_active():
            for node in sorter.get_ready():
                module.noop(node)
                sorter.done(node)
        out[f"graphlib_{shape}"] = time.perf_counter() - began
    with ProcessPoolExecutor(2) as pool:
        wait([pool.submit(module.noop, i) for i in range(20)])  # warm: workers started
        began = time.perf_counter()
        for i in range(n):
            pool.submit(module.noop, i).result()
        out["pool_chain"] = time.perf_counter() - began
        began = time.perf_counter()
        pool.submit(module.noop, 0).result()
        wait([pool.submit(module.noop, i) for i in range(1, n - 1)])
        pool.submit(module.noop, n - 1).result()
        out["pool_fanout"] = time.perf_counter() - began
    for key, code in (("python_start", "pass"), ("worker_start", WORKER_IMPORT)):
        found = []
        for _ in range(3):
            began = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            found.append(time.perf_counter() - began)
        out[key] = statistics.median(found)
    here, there = multiprocessing.Pipe()
    echo = multiprocessing.get_context("fork").Process(target=_echo, args=(there,))
    echo.start()
    here.send(0), here.recv()
    began = time.perf_counter()
    for i in range(n):
        here.send(i)
        here.recv()
    out["pipe"] = (time.perf_counter() - began) / n
    here.send(None)
    echo.join()
    return out


def _echo(conn: Any) -> None:
    while (item := conn.recv()) is not None:
        conn.send(item)


def child_bare_ray(o: dict[str, Any]) -> dict[str, Any]:
    import ray

    began = time.perf_counter()
    ray.init(**RAY_OPTIONS)
    out: dict[str, Any] = {"init": time.perf_counter() - began, "version": ray.__version__}

    @ray.remote
    def noop(i: int = 0) -> None:  # defined here: shipped by value, no import path needed
        return None

    n = o["n"]
    began = time.perf_counter()
    ray.get(noop.remote(0))
    out["one"] = time.perf_counter() - began
    began = time.perf_counter()
    for i in range(n):
        ray.get(noop.remote(i))
    out["chain"] = time.perf_counter() - began
    began = time.perf_counter()
    ray.get(noop.remote(0))
    ray.get([noop.remote(i) for i in range(1, n - 1)])
    ray.get(noop.remote(n - 1))
    out["fanout"] = time.perf_counter() - began
    ray.shutdown()
    return out


def child_prefect(o: dict[str, Any]) -> dict[str, Any]:
    """Runs under the peers venv: Prefect 3 on its ephemeral server (PREFECT_HOME in the
    workdir), its default task runner and logging."""
    os.environ["PREFECT_HOME"] = o["home"]
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    began = time.perf_counter()
    import prefect
    from prefect import flow, task

    out: dict[str, Any] = {"import": time.perf_counter() - began, "version": prefect.__version__}
    module = tasks_module(Path(o["workdir"]))
    noop = task(module.noop)

    @flow
    def chain(n: int) -> None:
        for i in range(n):
            noop(i)

    @flow
    def fanout(n: int) -> None:
        root = noop.submit(0)
        root.wait()
        middle = [noop.submit(i, wait_for=[root]) for i in range(1, n - 1)]
        noop.submit(n - 1, wait_for=middle).result()

    def timed(function: Any, n: int) -> float:
        began = time.perf_counter()
        function(n)
        return time.perf_counter() - began

    out["first_flow"] = timed(chain, 1)  # starts the ephemeral server
    out["one"] = timed(chain, 1)
    out["chain"] = timed(chain, o["n"])
    out["fanout"] = timed(fanout, o["n"])
    return out


def peers_python(venv: Path, install: bool) -> tuple[str | None, str]:
    return peer_venv(venv, PREFECT_PINS, "prefect", install)


# the report -----------------------------------------------------------------------------
def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 0.1 else f"{seconds * 1e3:,.0f} ms"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} us"


def med(found: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in found)


def spread(found: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in found]
    return f"{ms(min(values))}-{ms(max(values))}" if len(values) > 1 else "-"


def report(results: dict[str, list[dict[str, Any]]], n: int, notes: list[str]) -> None:
    engines = [
        ("stagewise local", "local"),
        ("stagewise ray (Ray started first)", "ray"),
        ("bare Ray tasks", "bare_ray"),
        ("Prefect 3 local", "prefect"),
    ]
    rows, per_task = [], {}
    for label, key in engines:
        found = results.get(key) or []
        if not found:
            continue
        for shape in SHAPES:
            total = med(found, shape)
            per_task[(key, shape)] = total / n
            fixed = med(found, "one")
            rows.append(
                [
                    label,
                    shape,
                    ms(total),
                    spread(found, shape),
                    ms(total / n),
                    f"{n / total:,.0f}/s",
                    ms(fixed),
                    ms((total - fixed) / max(n - 1, 1)),
                    str(len(found)),
                ]
            )
    print()
    print(
        table(
            f"{n:,} no-op tasks: total, per task (total / tasks); median over rounds",
            [
                "engine",
                "shape",
                "total",
                "min-max",
                "per task",
                "tasks/s",
                "1-task run",
                "marginal/task",
                "runs",
            ],
            rows,
        )
    )
    print(
        "# fan-out: 1 root -> N-2 -> 1 sink. 'marginal/task' = (total - 1-task run) / (N-1). "
        "stagewise: the default SQLite DB, state persisted, logs captured, worker pool "
        "start included; Ray (both) timed after ray.init; Prefect after its first flow "
        "(server start)"
    )
    goals: list[list[str]] = []

    def goal(name: str, measured: str, ratio: str, target: str, ok: bool | None) -> None:
        goals.append([name, measured, ratio, target, "-" if ok is None else verdict(ok)])

    for shape in SHAPES:
        local = per_task.get(("local", shape))
        if local is None:
            continue
        goal(f"local per task, {shape}", ms(local), "", "<= 1 ms", local <= 1e-3)
        goal(f"P2 warm pool per task, {shape}", ms(local), "", "<= 0.3 ms", local <= 3e-4)
        prefect = per_task.get(("prefect", shape))
        if prefect is not None:
            ratio = prefect / local
            goal(
                f"vs Prefect 3 local, {shape}",
                f"Prefect {ms(prefect)}/task",
                f"ratio {ratio:.1f}x below",
                ">= 30x below",
                ratio >= 30,
            )
        ray_sw, bare = per_task.get(("ray", shape)), per_task.get(("bare_ray", shape))
        if ray_sw is not None and bare is not None:
            ratio = ray_sw / bare
            goal(
                f"stagewise ray vs bare Ray, {shape}",
                f"{ms(ray_sw)} vs {ms(bare)} /task",
                f"ratio {ratio:.1f}x",
                "<= 2x",
                ratio <= 2,
            )
    if results.get("local"):
        chain = med(results["local"], "chain")
        goal(f"{n:,}-task chain, local", ms(chain), "", "<= 1 s (P2: <= 0.5 s)", chain <= 1.0)
        for shape in SHAPES:
            key = f"cached_{shape}"
            if key in results["local"][0]:
                hit = med(results["local"], key)
                goal(f"cache-hit re-run, {shape}", ms(hit), "", "<= 0.5 s", hit <= 0.5)
    if results.get("ray"):
        chain = med(results["ray"], "chain")
        goal(f"{n:,}-task chain, ray", ms(chain), "", "<= 1 s", chain <= 1.0)
        fan = n / med(results["ray"], "fanout")
        goal("P5 dispatch, ray fan-out", f"{fan:,.0f} tasks/s", "", ">= 2,000/s", fan >= 2000)
    if results.get("local"):
        fan = n / med(results["local"], "fanout")
        goal("P5 dispatch, local fan-out", f"{fan:,.0f} tasks/s", "", ">= 2,000/s", fan >= 2000)
    for kind, label in (("first_warm", "existing DB"), ("first_fresh", "new DB (migrations)")):
        found = results.get(kind) or []
        if found:
            first = med(found, "first")
            goal(
                f"import -> first task result, {label}",
                f"{ms(first)} (whole child process {ms(med(found, 'child_wall'))})",
                "",
                "<= 0.5 s (P3: <= 0.3 s)",
                first <= 0.5,
            )
    persist = results.get("persist") or []
    if persist:
        apply = med(persist, "apply_b1")
        log = med(persist, "execute_full") - med(persist, "execute_bare")
        goal(
            "P6 persist + log per task (chain batches)",
            f"apply {us(apply)} + env/capture/journal {us(log)}",
            "",
            "<= 100 us",
            apply + log <= 1e-4,
        )
    print()
    print(
        table("Goals (issue 4 and P1-P6)", ["goal", "measured", "ratio", "goal", "verdict"], goals)
    )

    first_rows = []
    for kind, label in (("first_warm", "existing DB"), ("first_fresh", "new DB")):
        found = results.get(kind) or []
        if found:
            first_rows.append(
                [label]
                + [ms(med(found, k)) for k in ("import", "built", "runner_started", "first")]
                + [ms(med(found, "run_done")), ms(med(found, "child_wall"))]
            )
    if first_rows:
        print()
        print(
            table(
                "Import to first task result, a one-task pipeline in a fresh process: time since "
                "'import stagewise.pipeline' at each step (the listener's first events)",
                [
                    "database",
                    "imported",
                    "SDK built",
                    "runner_started",
                    "task_succeeded",
                    "run returned",
                    "child process",
                ],
                first_rows,
            )
        )
        print(
            "# runner_started: database opened, plan checked, run recorded, worker pool "
            "launched; task_succeeded: the worker started, ran the task, and the runner "
            "recorded it"
        )
    if persist:
        keys = sorted(k for k in persist[0] if k.startswith("apply_b"))
        rows = [[f"RunStore.apply, {k[7:]} task(s) a batch", us(med(persist, k))] for k in keys]
        rows += [[label, us(med(persist, f"execute_{v}"))] for v, label in EXECUTE_VARIANTS.items()]
        print()
        print(table("Persistence and log capture, per task (P6)", ["what", "per task"], rows))
    refs = results.get("refs") or []
    if refs and results.get("local"):
        rows = []
        for shape in SHAPES:
            local = per_task[("local", shape)]
            for key, label in (
                (f"graphlib_{shape}", "graphlib loop, in process (P1 floor)"),
                (f"pool_{shape}", "ProcessPoolExecutor(2), warm"),
            ):
                ref = med(refs, key) / n
                rows.append([shape, label, us(ref), f"ratio {local / ref:,.1f}x"])
        for key, label in (
            ("python_start", "process start: python -c pass"),
            ("worker_start", f"process start: python -c '{WORKER_IMPORT}'"),
        ):
            rows.append(["-", label, ms(med(refs, key)), ""])
        pipe = med(refs, "pipe")
        rows.append(
            [
                "-",
                "raw pipe round trip (fork)",
                us(pipe),
                f"ratio {per_task[('local', 'chain')] / pipe:,.1f}x (chain)",
            ]
        )
        print()
        print(
            table(
                "References: stagewise local per task / reference per task (P1: <= 5x graphlib; "
                "P2: <= 1.5x ProcessPoolExecutor, <= 10x raw pipe)",
                ["shape", "reference", "per task", "stagewise local / it"],
                rows,
            )
        )
    for note in notes:
        print(f"# {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/stagewise-bench")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--runs", type=int, default=None, help="rounds (default 5)")
    parser.add_argument("--tasks", type=int, default=None, help="tasks per DAG (default 1000)")
    parser.add_argument(
        "--prefect-runs", type=int, default=None, help="rounds with Prefect (default 3)"
    )
    parser.add_argument(
        "--peers",
        choices=["install", "auto", "skip"],
        default=None,
        help="Prefect's venv: install if needed (default), use only if ready (default with "
        "--quick), or skip",
    )
    parser.add_argument("--peers-venv", default=None, help="default: WORKDIR/peers-dag")
    parser.add_argument("--no-ray", action="store_true", help="leave out both Ray engines")
    parser.add_argument("--profile", action="store_true", help="cProfile the local and ray chains")
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        children = {
            "stagewise": child_stagewise,
            "profile": child_profile,
            "first": child_first,
            "persist": child_persist,
            "refs": child_refs,
            "bare_ray": child_bare_ray,
            "prefect": child_prefect,
        }
        answer = children[args.child](json.loads(args.options))
        sys.stdout.flush()
        print(json.dumps(answer), flush=True)
        return

    base = Path(args.workdir)
    workdir = (base / "quick" if args.quick else base / "dag").resolve()
    n = args.tasks or (20 if args.quick else 1000)
    runs = args.runs or (2 if args.quick else 5)
    prefect_runs = min(runs, args.prefect_runs or (1 if args.quick else 3))
    ray_runs = 1 if args.quick else runs  # ray.init alone takes seconds
    peers = args.peers or ("auto" if args.quick else "install")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    (workdir / f"{MODULE}.py").write_text(MODULE_SOURCE)
    outputs = str(workdir / "outputs")
    common = {"workdir": str(workdir), "outputs": outputs, "n": n}
    notes: list[str] = []
    began = time.perf_counter()
    print(f"# pipeline_dag: {os.cpu_count()} cores, {n:,} tasks, {runs} rounds, workdir {workdir}")

    with_ray = not args.no_ray and ray_executor_available()
    if args.no_ray:
        notes.append("Ray: left out (--no-ray)")
    elif not with_ray:
        notes.append("Ray: skipped (ray or stagewise.pipeline.executors.ray not importable)")
    venv = Path(args.peers_venv) if args.peers_venv else base / "peers-dag"
    python, status = None, "skipped (--peers skip)"
    if peers != "skip":
        python, status = peers_python(venv, install=peers == "install")
    notes.append(f"Prefect: {status}" + (f" ({python})" if python else ""))

    results: dict[str, list[dict[str, Any]]] = {}
    failed: list[str] = []  # stagewise's own children that failed: the exit status says so

    def child(kind: str, mode: str, python: str | None = None, **options: Any) -> None:
        try:
            results.setdefault(kind, []).append(run_child(__file__, mode, python, **options))
        except RuntimeError as exc:  # report, do not hide
            notes.append(f"{kind}: a run failed: {str(exc).strip()[-800:]}")
            if kind not in ("bare_ray", "prefect"):
                failed.append(kind)

    warm_home = str(workdir / "home-first")
    child("first_warm", "first", home=warm_home, tag="setup", **common)  # makes the DB
    results.pop("first_warm", None)
    for r in range(runs):
        tag = f"r{r}"
        child(
            "local",
            "stagewise",
            executor="local",
            home=str(workdir / f"home-local-{r}"),
            tag=tag,
            cached=True,
            **common,
        )
        if with_ray and r < ray_runs:
            child(
                "ray",
                "stagewise",
                executor="ray",
                home=str(workdir / f"home-ray-{r}"),
                tag=tag,
                cached=False,
                **common,
            )
            child("bare_ray", "bare_ray", **common)
        if python and r < prefect_runs:
            child("prefect", "prefect", python, home=str(workdir / "prefect-home"), **common)
        child("first_warm", "first", home=warm_home, tag=tag, **common)
        child("first_fresh", "first", home=str(workdir / f"home-first-{r}"), tag=tag, **common)
        child(
            "persist",
            "persist",
            home=str(workdir / f"home-persist-{r}"),
            tag=tag,
            batches=[1, 2, 50],
            **common,
        )
        child("refs", "refs", **common)
        print(f"# round {r + 1}/{runs} done, {time.perf_counter() - began:.0f} s", flush=True)
    if results.get("bare_ray"):
        notes.append(
            f"Ray {results['bare_ray'][0]['version']}; ray.init took "
            f"{ms(med(results['bare_ray'], 'init'))} (bare), "
            f"{ms(med(results['ray'], 'init')) if results.get('ray') else '-'} "
            "(stagewise child), not counted in either"
        )
    if results.get("prefect"):
        p = results["prefect"]
        notes.append(
            f"Prefect {p[0]['version']}: import {ms(med(p, 'import'))}, first flow "
            f"(server start) {ms(med(p, 'first_flow'))}, not counted"
        )
    if results.get("local"):
        notes.append(
            f"SDK build + plan of the {n:,}-task DAG (not counted): chain "
            f"{ms(med(results['local'], 'plan_chain'))}, fan-out "
            f"{ms(med(results['local'], 'plan_fanout'))}"
        )
    notes.append(
        "P1 (in-process executor <= 25 us/task) and P4 (>= 20k tasks/s on threads): "
        "stagewise has no in-process or thread executor; the graphlib row is the floor"
    )
    report(results, n, notes)

    for executor in ("local", "ray") if args.profile else ():
        if executor == "ray" and not with_ray:
            continue
        found = run_child(
            __file__,
            "profile",
            home=str(workdir / f"home-profile-{executor}"),
            tag=f"p-{executor}",
            top=15,
            executor=executor,
            **common,
        )
        print(
            f"\n# cProfile of one {executor} chain run of {n:,} tasks, the runner's process "
            f"({found['seconds']:.2f} s under the profiler)"
        )
        for key in ("tottime", "cumulative"):
            lines = found[key].splitlines()
            start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
            print(f"## by {key}")
            print("\n".join(lines[start:]).rstrip())
    print(f"\n# total {time.perf_counter() - began:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    with contextlib.suppress(OSError):
        shutil.rmtree(workdir / "outputs")
    if failed:
        raise SystemExit(f"stagewise runs failed: {', '.join(sorted(set(failed)))} (see above)")


if __name__ == "__main__":
    main()
