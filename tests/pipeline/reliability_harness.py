"""The reliability tests' harness: runners in child processes that a test starts,
kills (SIGKILL, workers and all) or sets off together, the random-kill loop, and checks of
a finished run's folder.

Children run ``python -m tests.pipeline.reliability_tasks`` on the database they are
given; see that module for the task functions and the pipelines.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

from stagewise.pipeline.runner import resume_run
from stagewise.store.runs import RunRecord, RunStore
from tests.pipeline import reliability_tasks as rt

SEED = 12345
# A known runner bug (test_an_interrupted_attempt_leaves_no_temporary_output_behind): a
# runner killed between a task writing its output and reporting back leaves that attempt's
# ``.partial-`` file behind. The random kills hit that moment now and then; until the bug
# is fixed they tolerate exactly those files, so that their outcome does not depend on luck.
TOLERATE_PARTIALS_OF_INTERRUPTED_ATTEMPTS = False
REPO = Path(__file__).resolve().parents[2]
Child = subprocess.Popen[bytes]


def spawn(args: list[str], url: str, log: Path) -> Child:
    """``python -m tests.pipeline.reliability_tasks ARGS`` on the database ``url``."""
    env = dict(os.environ, STAGEWISE_DB_URL=url)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", rt.__name__, *args], env=env, stdout=out, stderr=out
        )


def wait_for(check: Callable[[], bool], child: Child, log: Path, what: str) -> None:
    deadline = time.monotonic() + 60
    while not check():
        if child.poll() is not None and not check():
            raise AssertionError(
                f"the runner exited ({child.returncode}) before {what}:\n" + log.read_text()
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()}")
        time.sleep(0.002)


def workers_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):  # a thread that just ended
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True


def kill_runner(child: Child) -> bool:
    """SIGKILL the runner, wait until its workers died with it (PR_SET_PDEATHSIG); False
    if it had already exited."""
    workers = workers_of(child.pid)
    if child.poll() is not None:
        return False
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 10
    while not all(gone(w) for w in workers):
        if time.monotonic() > deadline:
            raise AssertionError(f"workers {workers} outlived their killed runner")
        time.sleep(0.005)
    return True


@contextlib.contextmanager
def stopping() -> Iterator[list[Child]]:
    """A list to put children in; those still running at the end are killed."""
    children: list[Child] = []
    try:
        yield children
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


# ---------------------------------------------------------------------- checks


def run_folder_problems(
    record: RunRecord,
    names: list[str],
    tolerated: AbstractSet[str] = frozenset(),
) -> list[str]:
    """Each task's output exactly once, under its final name, and nothing else: no
    temporaries (``.partial-``, ``.old-``) left beside them (but those ``tolerated``)."""
    folder = Path(record.output_dir)
    found = {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.relative_to(folder).parts[0] != "logs"
    } - tolerated
    expected = set(names) | {f"{n}/out" for n in names}
    problems = (
        [f"unexpected in the run folder: {sorted(found - expected)}"] if found - expected else []
    )
    if expected - found:
        problems.append(f"missing from the run folder: {sorted(expected - found)}")
    wrong = [
        n for n in names if (folder / n / "out").is_file() and (folder / n / "out").read_text() != n
    ]
    if wrong:
        problems.append(f"outputs with the wrong content: {wrong}")
    return problems


@dataclass
class Kill:
    """Where one run is killed: once the ledger holds ``progress`` lines (tasks that got
    going), plus ``jitter`` seconds. Chosen by progress rather than by a clock so that the
    kills spread over the whole run however loaded the machine is (its start-up time
    varies several-fold); ``at`` records the moment, in seconds since the run began."""

    index: int
    progress: int
    jitter: float
    at: float = 0.0
    alive: bool = False  # the runner was still running when killed
    done: int = 0  # tasks recorded succeeded at the kill

    def __str__(self) -> str:
        end = "" if self.alive else " (had finished)"
        return f"#{self.index}: {self.at:.3f} s, {self.done}/20 done{end}"


@dataclass
class Prepared:
    kill: Kill
    name: str
    names: list[str]
    ledger: Path
    log: Path
    go: Path
    child: Child


def prepare(url: str, tmp_path: Path, kill: Kill, rng: random.Random, workers: int) -> Prepared:
    """The 20-task DAG as its own pipeline, and a runner for it started ahead (imported,
    connected, waiting for its go file)."""
    name = f"kill{kill.index:02d}"
    ledger = tmp_path / f"{name}.ledger"
    edges = rt.mixed_dag()
    pauses = [round(rng.uniform(0.01, 0.05), 3) for _ in edges]
    pipeline = rt.write_pipeline(tmp_path / f"{name}.yaml", name, edges, ledger, pauses)
    go, log = tmp_path / f"{name}.go", tmp_path / f"{name}.log"
    args = ["run", str(pipeline), str(tmp_path / "outputs"), str(workers), str(go)]
    child = spawn(args, url, log)
    return Prepared(kill, name, [n for n, _ in edges], ledger, log, go, child)


def killed_and_resumed(url: str, run: Prepared) -> list[str]:
    """Set ``run`` off, SIGKILL it at its kill point, resume it here; the problems found
    (none when all is well)."""
    kill, ledger = run.kill, run.ledger
    run.go.touch()
    start = time.monotonic()
    wait_for(
        lambda: len(rt.read_ledger(ledger)) >= kill.progress or run.child.poll() is not None,
        run.child,
        run.log,
        f"{kill.progress} tasks",
    )
    time.sleep(kill.jitter)
    kill.at = time.monotonic() - start
    kill.alive = kill_runner(run.child)

    store = RunStore(url)
    runs = store.list_runs(pipeline=run.name)
    assert len(runs) == 1, f"{run.name}: {len(runs)} runs recorded\n{run.log.read_text()}"
    done = {t.name for t in store.tasks(runs[0].id) if t.state == "succeeded"}
    kill.done = len(done)
    before = rt.read_ledger(ledger)

    record = resume_run(runs[0].id, store=store)

    after = rt.read_ledger(ledger)
    problems = (
        [] if record.state == "succeeded" else [f"the run ended {record.state}: {record.error}"]
    )
    states = {t.name: t.state for t in store.tasks(record.id)}
    if set(states.values()) != {"succeeded"}:
        problems.append(f"task states: {states}")
    again = sorted(n for n in after[len(before) :] if n in done)
    if again:
        problems.append(f"tasks recorded succeeded at the kill ran again: {again}")
    if set(run.names) - set(after):
        problems.append(f"tasks that never ran: {sorted(set(run.names) - set(after))}")
    attempts = store.attempts(record.id)
    left = [f"{a.task}#{a.number}" for a in attempts if a.state == "running"]
    if left:
        problems.append(f"attempts left running: {left}")
    tolerated = {
        f"{a.task}/.out.partial-{record.id}-a{a.number}"
        for a in attempts
        if a.state == "interrupted" and TOLERATE_PARTIALS_OF_INTERRUPTED_ATTEMPTS
    }
    problems += run_folder_problems(record, run.names, tolerated)
    return [f"{run.name} ({kill}): {p}" for p in problems]


def kill_and_resume_many(url: str, tmp_path: Path, count: int, workers: int = 2) -> list[Kill]:
    rng = random.Random(SEED)
    kills = [Kill(i, rng.randint(0, 20), round(rng.uniform(0.0, 0.05), 3)) for i in range(count)]
    problems: list[str] = []
    with stopping() as started:
        runs = [prepare(url, tmp_path, kills[0], rng, workers)]
        started.append(runs[0].child)
        for kill in kills:
            if kill.index + 1 < count:  # the next runner imports while this one runs
                runs.append(prepare(url, tmp_path, kills[kill.index + 1], rng, workers))
                started.append(runs[-1].child)
            problems += killed_and_resumed(url, runs[kill.index])
    timeline = "; ".join(str(k) for k in kills)
    assert not problems, "\n".join(problems) + f"\nkills (seed {SEED}): {timeline}"
    # The kills hit runs in flight, not only finished ones.
    assert sum(k.alive and k.done < 20 for k in kills) >= count // 2, timeline
    return kills


def start_together(children: list[Child], go: Path) -> None:
    """Wait until every child is ready (imported, connected), then set them all off."""
    deadline = time.monotonic() + 120
    while len(list(go.parent.glob(f"{go.name}.*.ready"))) < len(children):
        if any(c.poll() is not None for c in children) or time.monotonic() > deadline:
            raise AssertionError("a child runner did not get ready")
        time.sleep(0.005)
    go.touch()


def finish(children: list[Child], logs: list[Path]) -> list[str]:
    """Each child's last line (``RUN_ID STATE``) once all have exited with status 0."""
    for child in children:
        child.wait(timeout=120)
    texts = [log.read_text() for log in logs]
    assert [c.returncode for c in children] == [0] * len(children), "\n".join(texts)
    return [text.strip().splitlines()[-1] for text in texts]
