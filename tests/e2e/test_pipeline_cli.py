"""`stagewise run`, `stagewise runs ...` and `stagewise artifacts lineage` through the real
command: exit codes, JSON output, logs, caching, detached runs, cancelling, and bad input
that leaves nothing in the database."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.conftest import CliRunner

TASKS = """
import os, time

def make(raw, out, n=3):
    os.makedirs(out)
    text = open(raw).read().strip() * n
    open(os.path.join(out, "data.txt"), "w").write(text)
    print("made", n)

def use(data, result, lr=0.1):
    open(result, "w").write(open(os.path.join(data, "data.txt")).read() + f" lr={lr}")

def boom():
    raise ValueError("always fails")

def nap(out, seconds=30.0):
    time.sleep(seconds)
    open(out, "w").write("rested")
"""

GOOD = """
apiVersion: stagewise/v1
kind: Pipeline
metadata: {name: demo, version: "1"}
spec:
  parameters: {n: 4, lr: 0.5}
  tasks:
    - name: make
      function: flow_tasks.py:make
      image: example/prep:1
      parameters: {n: "${parameters.n}"}
      inputs: [{name: raw, source: raw.txt}]
      outputs: [{name: out}]
    - name: use
      function: flow_tasks.py:use
      inputs: [{name: data, source: "${tasks.make.outputs.out}"}]
      outputs: [{name: result}]
    - name: greet
      type: shell
      command: "echo hello ${parameters.lr} > $STAGEWISE_OUTPUT_GREETING"
      outputs: [{name: greeting}]
"""

FAILING = """
apiVersion: stagewise/v1
kind: Pipeline
metadata: {name: fails}
spec:
  tasks:
    - {name: boom, function: flow_tasks.py:boom, retries: 1, retry_delay: 0.05}
    - {name: after, type: shell, command: "echo never"}
  dependencies:
    - {from: boom, to: after}
"""

SLOW = """
apiVersion: stagewise/v1
kind: Pipeline
metadata: {name: slow}
spec:
  parameters: {seconds: 30}
  tasks:
    - name: nap
      function: flow_tasks.py:nap
      parameters: {seconds: "${parameters.seconds}"}
      outputs: [{name: out}]
    - {name: then, type: shell, command: "echo done"}
  dependencies:
    - {from: nap, to: then}
"""

CYCLE = """
apiVersion: stagewise/v1
kind: Pipeline
metadata: {name: loop}
spec:
  tasks:
    - {name: a, type: shell, command: "true"}
    - {name: b, type: shell, command: "true"}
  dependencies:
    - {from: a, to: b}
    - {from: b, to: a}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "flow_tasks.py").write_text(TASKS)
    (tmp_path / "raw.txt").write_text("ab\n")
    for name, text in {"good": GOOD, "fails": FAILING, "slow": SLOW, "cycle": CYCLE}.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    return tmp_path


def _json(result) -> object:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def _database(tmp_path: Path) -> Path:
    return Path(os.environ["STAGEWISE_HOME"]) / "stagewise.db"


def _wait_for(cli: CliRunner, run_id: str, done, seconds: float = 30.0) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while True:
        shown = _json(cli("runs", "show", run_id, "--json"))
        if done(shown) or time.monotonic() > deadline:
            return shown  # type: ignore[return-value]
        time.sleep(0.3)


def test_a_run_is_listed_shown_logged_traced_and_then_cached(cli: CliRunner, project: Path):
    result = cli("run", "good.yaml", "n=2")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "executor: local" in out and "outputs:" in out and "succeeded" in out
    assert "image example/prep:1 is recorded; a local run uses the current Python" in out
    assert re.search(r"\d\d:\d\d:\d\d make +started \(attempt 1\)", out)
    assert "Traceback" not in result.stderr

    (listed,) = _json(cli("runs", "list", "--json"))
    assert listed["pipeline"] == "demo" and listed["state"] == "succeeded"
    assert (listed["tasks_done"], listed["tasks_total"]) == (3, 3)
    run_id = listed["id"]
    assert Path(listed["output_dir"]).name.endswith("-n=2")

    shown = _json(cli("runs", "show", run_id[:17], "--json"))
    tasks = {t["name"]: t for t in shown["tasks"]}
    order = [t["name"] for t in shown["tasks"]]  # topological
    assert sorted(order) == ["greet", "make", "use"] and order.index("make") < order.index("use")
    assert tasks["use"]["upstream"] == ["make"] and tasks["greet"]["upstream"] == []
    assert all(t["state"] == "succeeded" and t["attempts"] == 1 for t in tasks.values())
    outputs = {o["task"]: o for o in shown["outputs"]}
    assert Path(outputs["use"]["uri"]).read_text() == "abab lr=0.5"
    text = cli("runs", "show", run_id).stdout
    assert "make  succeeded  1 attempt" in text and "use  succeeded" in text

    logged = cli("runs", "logs", run_id, "make")
    assert logged.returncode == 0 and "made 2" in logged.stdout

    lineage = _json(cli("artifacts", "lineage", outputs["use"]["id"], "--json"))
    assert (lineage["task"], lineage["run_id"], lineage["external"]) == ("use", run_id, False)
    (made,) = lineage["inputs"]
    assert (made["id"], made["task"]) == (outputs["make"]["id"], "make")
    (raw,) = made["inputs"]
    assert raw["external"] is True and raw["uri"].endswith("raw.txt") and raw["inputs"] == []
    drawn = cli("artifacts", "lineage", outputs["use"]["id"][:8])
    assert "written by make" in drawn.stdout and "external input" in drawn.stdout

    again = cli("run", "good.yaml", "n=2", "--json")
    rerun = _json(again)
    assert rerun["run"]["state"] == "succeeded" and rerun["run"]["id"] != run_id
    assert {t["state"] for t in rerun["tasks"]} == {"cached"}


def test_a_failing_task_exits_1_and_its_dependant_is_skipped(cli: CliRunner, project: Path):
    result = cli("run", "fails.yaml", "--json")
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    tasks = {t["name"]: t for t in data["tasks"]}
    assert data["run"]["state"] == "failed"
    assert (tasks["boom"]["state"], tasks["boom"]["attempts"]) == ("failed", 2)
    assert tasks["boom"]["error_headline"] == "ValueError: always fails"
    assert tasks["after"]["state"] == "skipped" and tasks["after"]["attempts"] == 0
    first = cli("runs", "logs", data["run"]["id"], "boom", "--attempt", "1")
    assert first.returncode == 0 and "ValueError: always fails" in first.stdout
    skipped = cli("runs", "logs", data["run"]["id"], "after")
    assert skipped.returncode == 2 and "no attempts yet (state: skipped)" in skipped.stderr
    lines = cli("run", "fails.yaml")
    assert lines.returncode == 1
    assert re.search(r"boom +attempt 1 failed: ValueError: always fails; retrying", lines.stdout)
    assert re.search(r"after +skipped", lines.stdout) and "stagewise runs logs" in lines.stdout


def test_detached_run_finishes_in_the_background(cli: CliRunner, project: Path):
    started = _json(cli("run", "slow.yaml", "seconds=0.1", "--detach", "--json"))
    shown = _wait_for(cli, started["run_id"], lambda s: s["run"]["state"] != "running")
    assert shown["run"]["state"] == "succeeded", shown
    assert "succeeded" in Path(started["log"]).read_text()


def test_cancel_stops_a_detached_run(cli: CliRunner, project: Path):
    started = _json(cli("run", "slow.yaml", "--detach", "--json"))
    run_id = started["run_id"]
    running = _wait_for(cli, run_id, lambda s: s["tasks"][0]["state"] == "running")
    assert running["run"]["runner_alive"] is True
    began = time.monotonic()
    cancelled = cli("runs", "cancel", run_id)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout, cancelled.stderr
    assert time.monotonic() - began < 20  # the 30 s task was stopped, not waited for
    shown = _json(cli("runs", "show", run_id, "--json"))
    assert shown["run"]["state"] == "cancelled"
    assert {t["state"] for t in shown["tasks"]} == {"cancelled"}
    deadline = time.monotonic() + 10
    while _alive(started["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(started["pid"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_run_without_a_runner_is_flagged_and_resumed(
    cli: CliRunner, project: Path, monkeypatch: pytest.MonkeyPatch
):
    from stagewise.pipeline.runner import start_run
    from stagewise.pipeline.spec import load_pipeline
    from stagewise.store import db

    monkeypatch.chdir(project)
    run_id = start_run(load_pipeline("good.yaml").plan)  # recorded; its runner "died"
    db.dispose_all()
    (listed,) = _json(cli("runs", "list", "--json"))
    assert listed["shown_state"] == "running (no live runner: resume it)"
    resumed = cli("runs", "resume", run_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert re.search(r"succeeded in .*: 3 succeeded", resumed.stdout)
    (listed,) = _json(cli("runs", "list", "--json"))
    assert listed["state"] == "succeeded" and listed["tasks_done"] == 3


@pytest.mark.parametrize(
    ("args", "env", "needles"),
    [
        (["run", "bad.yaml"], {}, ["bad.yaml:", "does not parse"]),
        (["run", "cycle.yaml"], {}, ["cycle"]),
        (
            ["run", "typo.yaml"],
            {},
            ["typo.yaml:19 (spec.tasks[2].type)", "unknown task type 'pyhton'"],
        ),
        (["run", "good.yaml", "nope=1"], {}, ["nope", "+nope=VALUE"]),
        (["run", "good.yaml", "--ray-address", "ray://x:1"], {}, ["--executor ray"]),
        (
            ["run", "good.yaml"],
            {"STAGEWISE_DB_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"},
            ["cannot reach the metadata database", "127.0.0.1"],
        ),
        (["runs", "show", "nosuchrun"], {}, ["'nosuchrun' is not in the metadata database"]),
        (["artifacts", "lineage", "feedface"], {}, ["no artifact 'feedface'"]),
    ],
)
def test_bad_input_exits_2_and_records_nothing(cli, project, args, env, needles):  # type: ignore[no-untyped-def]
    (project / "bad.yaml").write_text("apiVersion: stagewise/v1\nkind: [Pipeline\n")
    (project / "typo.yaml").write_text(GOOD.replace("type: shell", "type: pyhton"))
    result = cli(*args, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "error:" in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    assert not (project / "outputs").exists()
    database = _database(project)
    if database.exists():  # a read command may open (and so create) the database
        from stagewise.store.runs import RunStore

        assert RunStore().list_runs() == []


def test_a_function_that_cannot_be_imported_is_bad_input(cli: CliRunner, project: Path):
    (project / "nofn.yaml").write_text(GOOD.replace("flow_tasks.py:make", "no_such_module:make"))
    result = cli("run", "nofn.yaml")
    assert result.returncode == 2 and "no_such_module" in result.stderr
    assert not _database(project).exists()


def test_the_cli_knows_the_stores_task_states():
    from stagewise.cli import runs as cli_runs
    from stagewise.store import runs as store_runs

    assert (cli_runs.DONE, cli_runs.FINISHED) == (store_runs.DONE, store_runs.FINISHED)
