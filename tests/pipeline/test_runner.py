"""The runner on the local executor: wiring, caching, outputs, logs, retries, cancel."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stagewise.errors import PipelineError
from stagewise.pipeline.plan import Plan
from stagewise.pipeline.runner import RunOptions, cancel_run, run_pipeline, start_run
from stagewise.pipeline.spec import Input, Output, Pipeline, load_pipeline
from stagewise.store.runs import RunStore

TASKS = "tests.pipeline.sample_tasks"


def pipeline(tmp_path: Path, body: str, overrides: list[str] | None = None) -> Plan:
    path = tmp_path / "pipeline.yaml"
    path.write_text("apiVersion: stagewise/v1\nkind: Pipeline\nmetadata: {name: t}\nspec:\n" + body)
    return load_pipeline(path, overrides or []).plan


def run(tmp_path: Path, planned: Plan, **options: Any):
    options.setdefault("outputs", str(tmp_path / "outputs"))
    return run_pipeline(planned, options=RunOptions(**options))


DIAMOND = f"""
  parameters: {{greeting: hi}}
  tasks:
    - name: source
      function: {TASKS}:write
      parameters: {{text: "${{parameters.greeting}}"}}
      outputs: [{{name: out}}]
    - name: left
      function: {TASKS}:upper
      inputs: [{{name: source, source: "${{tasks.source.outputs.out}}"}}]
      outputs: [{{name: out}}]
    - name: right
      function: {TASKS}:write
      outputs: [{{name: out}}]
    - name: both
      function: {TASKS}:join
      inputs:
        - {{name: left, source: "${{tasks.left.outputs.out}}"}}
        - {{name: right, source: "${{tasks.right.outputs.out}}"}}
      outputs: [{{name: out}}]
"""


def test_a_diamond_runs_and_records_lineage(tmp_path: Path) -> None:
    record = run(tmp_path, pipeline(tmp_path, DIAMOND))
    assert record.state == "succeeded", record.error
    store = RunStore()
    outputs = store.artifacts_of(record.id)
    assert Path(outputs[("both", "out")].uri).read_text() == "HI+hello"
    assert Path(outputs[("both", "out")].uri).parent == Path(record.output_dir) / "both"
    read = store.artifacts_of(record.id, "both", "in")
    assert read[("both", "left")].id == outputs[("left", "out")].id
    assert store.readers_and_writer(outputs[("both", "out")])["inputs"]
    assert {t.state for t in store.tasks(record.id)} == {"succeeded"}
    assert [p.name for p in Path(record.output_dir).rglob("*.partial-*")] == []


def test_an_unchanged_rerun_is_answered_from_the_cache(tmp_path: Path) -> None:
    first = run(tmp_path, pipeline(tmp_path, DIAMOND))
    second = run(tmp_path, pipeline(tmp_path, DIAMOND))
    store = RunStore()
    assert {t.state for t in store.tasks(second.id)} == {"cached"}
    assert store.artifacts_of(second.id) == store.artifacts_of(first.id)
    # A changed parameter re-runs the tasks that take it, and what reads their outputs.
    third = run(tmp_path, pipeline(tmp_path, DIAMOND, ["greeting=yo"]))
    states = {t.name: t.state for t in store.tasks(third.id)}
    assert states == {
        "source": "succeeded",
        "left": "succeeded",
        "right": "cached",
        "both": "succeeded",
    }
    assert Path(store.artifacts_of(third.id)[("both", "out")].uri).read_text() == "YO+hello"
    # --no-cache runs everything.
    fourth = run(tmp_path, pipeline(tmp_path, DIAMOND), no_cache=True)
    assert {t.state for t in store.tasks(fourth.id)} == {"succeeded"}


def test_a_cached_output_that_changed_on_disk_is_not_reused(tmp_path: Path) -> None:
    first = run(tmp_path, pipeline(tmp_path, DIAMOND))
    store = RunStore()
    Path(store.artifacts_of(first.id)[("right", "out")].uri).write_text("tampered!")
    second = run(tmp_path, pipeline(tmp_path, DIAMOND))
    states = {t.name: t.state for t in store.tasks(second.id)}
    assert states["right"] == "succeeded" and states["source"] == "cached"


def test_cache_false_always_runs(tmp_path: Path) -> None:
    body = f"  tasks:\n    - {{name: a, function: '{TASKS}:write', cache: false, outputs: [{{name: out}}]}}\n"
    run(tmp_path, pipeline(tmp_path, body))
    again = run(tmp_path, pipeline(tmp_path, body))
    assert RunStore().tasks(again.id)[0].state == "succeeded"


def test_a_destination_output_is_replaced_atomically(tmp_path: Path) -> None:
    target = tmp_path / "published" / "greeting.txt"
    body = (
        f"  parameters: {{text: one}}\n  tasks:\n    - name: a\n      function: '{TASKS}:write'\n"
        f"      parameters: {{text: '${{parameters.text}}'}}\n"
        f"      outputs: [{{name: out, destination: '{target}'}}]\n"
    )
    run(tmp_path, pipeline(tmp_path, body))
    assert target.read_text() == "one"
    run(tmp_path, pipeline(tmp_path, body, ["text=two"]))
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["greeting.txt"]


def test_mounts_rebase_absolute_paths(tmp_path: Path) -> None:
    body = (
        f"  tasks:\n    - name: a\n      function: '{TASKS}:write'\n"
        "      outputs: [{name: out, destination: /mnt/user/out.txt}]\n"
    )
    run(tmp_path, pipeline(tmp_path, body), mounts={"/mnt/user": str(tmp_path / "mnt")})
    assert (tmp_path / "mnt" / "out.txt").read_text() == "hello"


def test_a_task_that_does_not_write_its_output_fails(tmp_path: Path) -> None:
    body = f"  tasks:\n    - {{name: a, function: '{TASKS}:writes_nothing', outputs: [{{name: out}}]}}\n"
    record = run(tmp_path, pipeline(tmp_path, body))
    assert record.state == "failed"
    assert "did not write its output 'out'" in RunStore().tasks(record.id)[0].error


def test_failure_retries_then_skips_dependants(tmp_path: Path) -> None:
    body = (
        f"  tasks:\n"
        f"    - {{name: bad, function: '{TASKS}:fail', retries: 2, retry_delay: 0.05, outputs: [{{name: out}}]}}\n"
        f"    - {{name: after, function: '{TASKS}:upper', outputs: [{{name: out}}],"
        f" inputs: [{{name: source, source: '${{tasks.bad.outputs.out}}'}}]}}\n"
        f"    - {{name: independent, function: '{TASKS}:write', outputs: [{{name: out}}]}}\n"
    )
    record = run(tmp_path, pipeline(tmp_path, body))
    store = RunStore()
    states = {t.name: t.state for t in store.tasks(record.id)}
    assert record.state == "failed" and "bad" in record.error
    assert states == {"bad": "failed", "after": "skipped", "independent": "succeeded"}
    attempts = store.attempts(record.id, "bad")
    assert [a.state for a in attempts] == ["failed"] * 3
    assert "ValueError: always fails" in attempts[0].error
    assert "sample_tasks.py" in attempts[0].error  # the user's own traceback
    assert attempts[2].started_at - attempts[1].started_at >= 0.1 - 0.01  # the delay doubles
    assert store.attempts(record.id, "after") == []


def test_logs_capture_stdout_of_the_task_and_its_children(tmp_path: Path) -> None:
    body = f"  tasks:\n    - {{name: a, function: '{TASKS}:noisy'}}\n"
    record = run(tmp_path, pipeline(tmp_path, body))
    log = Path(RunStore().attempts(record.id, "a")[0].log).read_text()
    assert "to stdout" in log and "from a child process" in log


def test_shell_tasks_quote_values_and_get_their_paths_in_the_environment(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    body = (
        f"  parameters: {{word: 'x; touch {canary}'}}\n  tasks:\n    - name: a\n      type: shell\n"
        "      command: 'printf %s ${parameters.word} > $STAGEWISE_OUTPUT_OUT'\n"
        "      outputs: [{name: out}]\n"
    )
    record = run(tmp_path, pipeline(tmp_path, body))
    assert record.state == "succeeded", record.error
    assert not canary.exists()
    assert (
        Path(RunStore().artifacts_of(record.id)[("a", "out")].uri).read_text()
        == f"x; touch {canary}"
    )


def test_a_shell_command_that_exits_non_zero_fails(tmp_path: Path) -> None:
    record = run(
        tmp_path, pipeline(tmp_path, "  tasks:\n    - {name: a, type: shell, command: 'exit 3'}\n")
    )
    assert "exited with status 3" in RunStore().tasks(record.id)[0].error


def test_a_timeout_stops_the_attempt(tmp_path: Path) -> None:
    body = f"  tasks:\n    - {{name: a, function: '{TASKS}:sleep', timeout: 0.5}}\n"
    start = time.monotonic()
    record = run(tmp_path, pipeline(tmp_path, body))
    assert time.monotonic() - start < 15
    assert [a.state for a in RunStore().attempts(record.id, "a")] == ["timed_out"]


def test_an_import_error_reads_as_the_task_failing(tmp_path: Path) -> None:
    module = tmp_path / "needs_a_library.py"
    module.write_text("import no_such_library\n\n\ndef f():\n    pass\n")
    record = run(
        tmp_path, pipeline(tmp_path, f"  tasks:\n    - {{name: a, function: '{module}:f'}}\n")
    )
    assert record.state == "failed"
    assert "No module named 'no_such_library'" in RunStore().tasks(record.id)[0].error


def test_cancel_stops_a_running_run(tmp_path: Path) -> None:
    body = (
        f"  tasks:\n    - {{name: slow, function: '{TASKS}:sleep'}}\n"
        f"    - {{name: later, function: '{TASKS}:write', outputs: [{{name: out}}]}}\n"
        "  dependencies: [{from: slow, to: later}]\n"
    )
    record = cancel_once_started(tmp_path, pipeline(tmp_path, body))
    store = RunStore()
    assert record.state == "cancelled"
    assert {t.name: t.state for t in store.tasks(record.id)} == {
        "slow": "cancelled",
        "later": "cancelled",
    }


def cancel_once_started(tmp_path: Path, planned: Plan) -> Any:
    """Run ``planned`` in a thread, cancel it once its first attempt started; its record."""
    store = RunStore()
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(record=run(tmp_path, planned)))
    thread.start()
    deadline = time.monotonic() + 20
    while not store.list_runs() or not store.attempts(store.list_runs()[0].id):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancel_run(store.list_runs()[0].id)
    thread.join(20)
    return result["record"]


def test_a_task_bigger_than_the_machine_is_refused_before_the_run(tmp_path: Path) -> None:
    body = f"  tasks:\n    - {{name: big, function: '{TASKS}:write', resources: {{cpu: 512}}}}\n"
    planned = pipeline(tmp_path, body)
    with pytest.raises(PipelineError, match="'big' asks for 512 CPU"):
        run(tmp_path, planned)
    assert RunStore().list_runs() == []
    body = f"  tasks:\n    - {{name: big, function: '{TASKS}:write', resources: {{cpu: 512}}, outputs: [{{name: out}}]}}\n"
    assert run(tmp_path, pipeline(tmp_path, body), fit_resources=True).state == "succeeded"


def test_the_output_folder_names_the_overrides(tmp_path: Path) -> None:
    planned = pipeline(tmp_path, DIAMOND, ["greeting=yo"])
    run_id = start_run(
        planned, overrides=["greeting=yo"], options=RunOptions(outputs=str(tmp_path / "o"))
    )
    folder = Path(RunStore().run(run_id).output_dir)
    assert folder.parent.parent.name == "t"
    assert folder.name.endswith("-greeting=yo")


def produce(rows: int, table: Output) -> None:
    Path(table).write_text("\n".join(str(i) for i in range(rows)))


def count(table: Input, total: Output, scale: int = 1) -> int:
    n = len(Path(table).read_text().splitlines()) * scale
    Path(total).write_text(str(n))
    return n


def test_the_python_sdk_gives_the_same_model_and_runs(tmp_path: Path) -> None:
    built = Pipeline("sdk", parameters={"rows": 5})
    first = built.add(produce, rows="${parameters.rows}")
    built.add(count, table=first.outputs.table, scale=2)
    spec = built.spec()
    assert spec.spec.tasks[1].inputs[0].source == "${tasks.produce.outputs.table}"
    assert spec.spec.tasks[0].function == "tests.pipeline.test_runner:produce"
    record = built.run(options=RunOptions(outputs=str(tmp_path / "out")))
    assert record.state == "succeeded", record.error
    assert RunStore().tasks(record.id)[1].result == 10
