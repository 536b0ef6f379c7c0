"""The executor contract: the same pipelines on the local executor and on a local Ray.

Each pipeline is a real YAML file whose tasks live in ``pipeline_tasks`` and write real
files; the assertions read the metadata database (through ``RunStore``) and the files
the tasks left behind, never the executor's internals.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stagewise.errors import PipelineError
from stagewise.pipeline.executors.base import Executor
from stagewise.pipeline.executors.local import LocalExecutor
from stagewise.pipeline.plan import Plan
from stagewise.pipeline.runner import RunOptions, resume_run, run_pipeline
from stagewise.pipeline.spec import load_pipeline
from stagewise.store.runs import RunRecord, RunStore

TASKS = "tests.contracts.pipeline_tasks"
EXECUTORS = ["local", "ray"]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """One local Ray with two CPUs for the whole module (starting one takes seconds)."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=2,
            num_gpus=0,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=128 * 2**20,
        )
    yield
    if started:
        ray.shutdown()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunStore:
    monkeypatch.setenv("STAGEWISE_DB_URL", f"sqlite:///{tmp_path}/db.sqlite")
    monkeypatch.chdir(tmp_path)
    return RunStore()


@pytest.fixture(params=EXECUTORS)
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    return request.param


class Runs:
    """Writes pipelines into tmp_path and runs them on the executor under test."""

    def __init__(self, tmp_path: Path, kind: str, store: RunStore) -> None:
        self.tmp_path, self.kind, self.store = tmp_path, kind, store
        self.ledger = tmp_path / "ledger.txt"

    def new(self) -> Executor:
        """A fresh executor per run (a run shuts its executor down at the end)."""
        if self.kind == "ray":
            from stagewise.pipeline.executors.ray import RayExecutor

            return RayExecutor()  # joins the module's Ray, and leaves it running
        return LocalExecutor()

    def plan(
        self,
        name: str,
        tasks: list[dict[str, Any]],
        after: list[tuple[str, str]] | None = None,
        **parameters: Any,
    ) -> Plan:
        """A pipeline file of ``tasks`` (``after``: declared (from, to) dependencies)."""
        spec: dict[str, Any] = {
            "parameters": {"ledger": str(self.ledger), **parameters},
            "tasks": tasks,
        }
        if after:
            spec["dependencies"] = [{"from": a, "to": b} for a, b in after]
        doc = {
            "apiVersion": "stagewise/v1",
            "kind": "Pipeline",
            "metadata": {"name": name, "version": "1"},
            "spec": spec,
        }
        path = self.tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        return load_pipeline(path).plan

    def options(self, **kwargs: Any) -> RunOptions:
        return RunOptions(executor=self.kind, outputs=str(self.tmp_path / "outputs"), **kwargs)

    def run(self, planned: Plan, **kwargs: Any) -> RunRecord:
        return run_pipeline(
            planned, options=self.options(**kwargs), store=self.store, executor=self.new()
        )

    def resume(self, run_id: str) -> RunRecord:
        return resume_run(run_id, store=self.store, executor=self.new())

    def states(self, run_id: str) -> dict[str, str]:
        return {t.name: t.state for t in self.store.tasks(run_id)}

    def attempts(self, run_id: str, task: str) -> list[str]:
        return [a.state for a in self.store.attempts(run_id, task)]

    def output(self, run_id: str, task: str, name: str = "out") -> str:
        """The text of what ``task`` published as ``name``."""
        uri = self.store.artifacts_of(run_id)[(task, name)].uri
        return Path(uri).read_text(encoding="utf-8")

    def ran(self) -> list[str]:
        """The tasks that did their work, in order, as often as they did it."""
        if not self.ledger.exists():
            return []
        return self.ledger.read_text(encoding="utf-8").split()


@pytest.fixture
def runs(tmp_path: Path, kind: str, store: RunStore) -> Runs:
    return Runs(tmp_path, kind, store)


def call(name: str, function: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "type": "python", "function": f"{TASKS}:{function}", **fields}


def test_diamond_passes_files_and_records_lineage(runs: Runs) -> None:
    def wired(source: str) -> list[dict[str, str]]:
        return [{"name": "data", "source": f"${{tasks.{source}.outputs.out}}"}]

    planned = runs.plan(
        "diamond",
        [
            call("top", "source", parameters={"text": "abc"}, outputs=[{"name": "out"}]),
            call("left", "upper", inputs=wired("top"), outputs=[{"name": "out"}]),
            call("right", "reverse", inputs=wired("top"), outputs=[{"name": "out"}]),
            call(
                "bottom",
                "join",
                inputs=[
                    {"name": "left", "source": "${tasks.left.outputs.out}"},
                    {"name": "right", "source": "${tasks.right.outputs.out}"},
                ],
                outputs=[{"name": "out"}],
            ),
        ],
    )
    record = runs.run(planned)

    assert record.state == "succeeded", record.error
    assert runs.states(record.id) == dict.fromkeys(["top", "left", "right", "bottom"], "succeeded")
    written = runs.store.artifacts_of(record.id)
    assert runs.output(record.id, "bottom") == "ABC+cba"
    assert sorted(runs.ran()) == ["bottom", "left", "right", "top"]
    read_by = runs.store.artifacts_of(record.id, direction="in")
    assert set(read_by) == {
        ("left", "data"),
        ("right", "data"),
        ("bottom", "left"),
        ("bottom", "right"),
    }
    assert read_by[("left", "data")].id == written[("top", "out")].id
    assert read_by[("right", "data")].id == written[("top", "out")].id
    assert read_by[("bottom", "left")].id == written[("left", "out")].id
    assert read_by[("bottom", "right")].id == written[("right", "out")].id
    assert written[("bottom", "out")].run_id == record.id
    assert written[("bottom", "out")].task == "bottom"
    started = [e for e in runs.store.events(record.id) if e["event"] == "runner_started"]
    assert started[0]["data"]["executor"].startswith(f"{runs.kind} (")


def test_a_failed_attempt_is_retried(runs: Runs, tmp_path: Path) -> None:
    counter = tmp_path / "counter.txt"
    planned = runs.plan(
        "retry",
        [
            call(
                "flaky",
                "flaky",
                parameters={"counter": str(counter)},
                outputs=[{"name": "out"}],
                retries=1,
                retry_delay=0.1,
            )
        ],
    )
    record = runs.run(planned)

    assert record.state == "succeeded", record.error
    assert runs.attempts(record.id, "flaky") == ["failed", "succeeded"]
    assert runs.output(record.id, "flaky") == "attempt 2"
    first = runs.store.attempts(record.id, "flaky")[0]
    assert "first attempt fails on purpose" in (first.error or "")


def test_a_task_that_always_fails_uses_its_retries_and_skips_its_dependants(runs: Runs) -> None:
    planned = runs.plan(
        "failing",
        [
            call("broken", "broken", retries=2, retry_delay=0.05),
            call("after", "source", outputs=[{"name": "out"}], parameters={"text": "never"}),
            call("alone", "source", outputs=[{"name": "out"}], parameters={"text": "fine"}),
        ],
        after=[("broken", "after")],
    )
    record = runs.run(planned)

    assert record.state == "failed"
    assert "broken" in (record.error or "")
    assert runs.attempts(record.id, "broken") == ["failed"] * 3
    assert sorted(runs.ran()) == ["alone", "broken", "broken", "broken"]
    assert runs.states(record.id) == {"broken": "failed", "after": "skipped", "alone": "succeeded"}
    assert runs.store.attempts(record.id, "after") == []
    assert runs.output(record.id, "alone") == "fine"


def test_an_attempt_past_its_timeout_is_stopped(runs: Runs) -> None:
    planned = runs.plan("slow", [call("slow", "sleeper", parameters={"seconds": 30}, timeout=1)])
    start = time.monotonic()
    record = runs.run(planned)

    assert time.monotonic() - start < 15
    assert record.state == "failed"
    assert runs.states(record.id) == {"slow": "failed"}
    attempts = runs.store.attempts(record.id, "slow")
    assert [a.state for a in attempts] == ["timed_out"]
    assert "timeout" in (attempts[0].error or "")


def test_resume_runs_only_what_did_not_succeed(runs: Runs, tmp_path: Path) -> None:
    flag = tmp_path / "flag.txt"
    flag.write_text("bad", encoding="utf-8")
    planned = runs.plan(
        "resumable",
        [
            call("a", "source", outputs=[{"name": "out"}], parameters={"text": "x"}),
            call(
                "b",
                "gated",
                inputs=[{"name": "data", "source": "${tasks.a.outputs.out}"}],
                outputs=[{"name": "out"}],
                parameters={"flag": str(flag)},
            ),
            call(
                "c",
                "upper",
                inputs=[{"name": "data", "source": "${tasks.b.outputs.out}"}],
                outputs=[{"name": "out"}],
            ),
        ],
    )
    first = runs.run(planned)
    assert first.state == "failed"
    assert runs.states(first.id) == {"a": "succeeded", "b": "failed", "c": "skipped"}

    flag.write_text("good", encoding="utf-8")  # the fix, between the two runs
    resumed = runs.resume(first.id)

    assert resumed.id == first.id
    assert resumed.state == "succeeded", resumed.error
    assert runs.states(first.id) == dict.fromkeys("abc", "succeeded")
    assert runs.ran() == ["a", "b", "c"]  # a ran once, b and c after the fix
    assert runs.attempts(first.id, "a") == ["succeeded"]
    assert runs.attempts(first.id, "b") == ["failed", "succeeded"]
    assert runs.output(first.id, "c") == "X!"


def test_shell_parameters_are_quoted(runs: Runs, tmp_path: Path) -> None:
    canary = tmp_path / "CANARY"
    planned = runs.plan(
        "shell",
        [
            {
                "name": "echo",
                "type": "shell",
                "command": 'echo ${parameters.message} > "$STAGEWISE_OUTPUT_OUT"',
                "outputs": [{"name": "out"}],
            }
        ],
        message=f"hello; touch {canary}",
    )
    record = runs.run(planned)

    assert record.state == "succeeded", record.error
    assert not canary.exists()
    assert runs.output(record.id, "echo") == f"hello; touch {canary}\n"


@pytest.mark.parametrize("kind", ["local", "ray"], indirect=True)
def test_a_timed_out_shell_command_leaves_nothing_running(runs: Runs, tmp_path: Path) -> None:
    started, late = tmp_path / "STARTED", tmp_path / "LATE"
    inner = shlex.quote(f"sleep 3; touch {shlex.quote(str(late))}")
    planned = runs.plan(
        "stuck",
        [
            {
                "name": "stuck",
                "type": "shell",
                # The inner sh is a grandchild of the worker, in the command's process group.
                "command": f"touch {shlex.quote(str(started))}; sh -c {inner}; true",
                "timeout": 2,
            }
        ],
    )
    record = runs.run(planned)

    assert runs.attempts(record.id, "stuck") == ["timed_out"]
    if not started.exists():
        pytest.skip("the worker did not start the command within the timeout")
    time.sleep(3.5)
    assert not late.exists(), "the timed-out command kept running"


@pytest.mark.parametrize("kind", ["ray"], indirect=True)
def test_ray_refuses_a_task_bigger_than_the_cluster(runs: Runs) -> None:
    planned = runs.plan(
        "gpu",
        [
            call(
                "train",
                "source",
                outputs=[{"name": "out"}],
                parameters={"text": "trained"},
                resources={"cpu": 1, "gpu": 1},
            )
        ],
    )
    with pytest.raises(PipelineError, match="'train' asks for 1 CPU, 1 GPU"):
        runs.run(planned)
    assert runs.store.list_runs() == []  # refused before the run started

    record = runs.run(planned, fit_resources=True)

    assert record.state == "succeeded", record.error
    assert runs.output(record.id, "train") == "trained"


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_ray_executor_without_ray_says_how_to_install_it() -> None:
    done = _python(
        "import sys; sys.modules['ray'] = None\n"
        "from stagewise.errors import PipelineError\n"
        "from stagewise.pipeline.runner import RunOptions, make_executor\n"
        "try:\n"
        "    make_executor(RunOptions(executor='ray'))\n"
        "except PipelineError as exc:\n"
        "    print(exc.render())\n"
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'stagewise[ray]'" in done.stdout


def test_an_unreachable_ray_address_is_a_clear_error() -> None:
    pytest.importorskip("ray")
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    done = _python(  # a fresh process: this one may have a Ray running already
        "from stagewise.errors import PipelineError\n"
        "from stagewise.pipeline.executors.ray import RayExecutor\n"
        "try:\n"
        f"    RayExecutor('127.0.0.1:{port}').capacity\n"
        "except PipelineError as exc:\n"
        "    print(exc.render())\n"
    )
    assert done.returncode == 0, done.stderr
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in done.stdout
    assert "--ray-address" in done.stdout
    assert time.monotonic() - start < 30
