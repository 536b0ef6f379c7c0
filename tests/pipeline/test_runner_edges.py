"""Edges of the runner found in review: quoting, references, cache keys, mounts, resume
after cancel, failures to publish, GPU assignment, stray processes, the database."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from stagewise.errors import DatabaseError
from stagewise.pipeline.executors.local import LocalExecutor
from stagewise.pipeline.runner import RunOptions, resume_run, run_pipeline
from stagewise.store import db
from stagewise.store.runs import Changes, RunStore
from tests.pipeline.test_runner import TASKS, cancel_once_started, pipeline, run


def test_task_outputs_in_a_shell_command_are_quoted_once(tmp_path: Path) -> None:
    outputs = tmp_path / "o u t;touch PWNED;"
    body = (
        f"  tasks:\n    - {{name: a, function: '{TASKS}:write', outputs: [{{name: out}}]}}\n"
        "    - name: b\n      type: shell\n"
        "      command: 'cat ${tasks.a.outputs.out} > $STAGEWISE_OUTPUT_OUT'\n"
        "      outputs: [{name: out}]\n"
        "    - name: c\n      type: shell\n"
        "      command: [cp, '${tasks.a.outputs.out}', '${tasks.b.outputs.out}.copy']\n"
    )
    record = run_pipeline(pipeline(tmp_path, body), options=RunOptions(outputs=str(outputs)))
    assert record.state == "succeeded", record.error
    assert not list(tmp_path.rglob("PWNED"))
    b_out = RunStore().artifacts_of(record.id)[("b", "out")].uri
    assert Path(b_out).read_text() == "hello"
    assert Path(b_out + ".copy").read_text() == "hello"


def test_a_parameter_that_holds_dollar_braces_is_text(tmp_path: Path) -> None:
    body = (
        "  parameters: {msg: 'price_${x}'}\n  tasks:\n    - name: a\n      type: shell\n"
        "      command: 'printf %s ${parameters.msg} > $STAGEWISE_OUTPUT_OUT'\n"
        "      outputs: [{name: out}]\n"
    )
    record = run(tmp_path, pipeline(tmp_path, body))
    assert record.state == "succeeded", record.error
    assert Path(RunStore().artifacts_of(record.id)[("a", "out")].uri).read_text() == "price_${x}"


def test_references_in_env_and_destinations_are_resolved(tmp_path: Path) -> None:
    body = (
        f"  tasks:\n    - {{name: a, function: '{TASKS}:write', outputs: [{{name: out}}]}}\n"
        "    - name: b\n      type: shell\n      env: {SOURCE: '${tasks.a.outputs.out}'}\n"
        "      command: 'cat \"$SOURCE\" > $STAGEWISE_OUTPUT_OUT'\n"
        "      outputs: [{name: out}]\n"
    )
    record = run(tmp_path, pipeline(tmp_path, body))
    assert record.state == "succeeded", record.error
    assert Path(RunStore().artifacts_of(record.id)[("b", "out")].uri).read_text() == "hello"


def test_a_command_reading_an_upstream_output_reruns_when_it_changes(tmp_path: Path) -> None:
    target = tmp_path / "fixed.txt"
    body = (
        f"  parameters: {{text: one}}\n  tasks:\n"
        f"    - {{name: a, function: '{TASKS}:write', parameters: {{text: '${{parameters.text}}'}},"
        f" outputs: [{{name: out, destination: '{target}'}}]}}\n"
        "    - name: b\n      type: shell\n"
        "      command: 'cat ${tasks.a.outputs.out} > $STAGEWISE_OUTPUT_OUT'\n"
        "      outputs: [{name: out}]\n"
    )
    run(tmp_path, pipeline(tmp_path, body))
    second = run(tmp_path, pipeline(tmp_path, body, ["text=two"]))
    store = RunStore()
    assert {t.name: t.state for t in store.tasks(second.id)} == {"a": "succeeded", "b": "succeeded"}
    assert Path(store.artifacts_of(second.id)[("b", "out")].uri).read_text() == "two"


def test_another_input_file_with_the_same_size_and_time_is_not_a_cache_hit(tmp_path: Path) -> None:
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("aaa")
    second.write_text("bbb")
    os.utime(second, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns))
    body = (
        f"  parameters: {{src: '{first}'}}\n  tasks:\n"
        f"    - {{name: u, function: '{TASKS}:upper', outputs: [{{name: out}}],"
        " inputs: [{name: source, source: '${parameters.src}'}]}\n"
    )
    run(tmp_path, pipeline(tmp_path, body))
    again = run(tmp_path, pipeline(tmp_path, body, [f"src={second}"]))
    assert RunStore().tasks(again.id)[0].state == "succeeded"
    assert Path(RunStore().artifacts_of(again.id)[("u", "out")].uri).read_text() == "BBB"


def test_a_different_mount_is_not_a_cache_hit(tmp_path: Path) -> None:
    body = f"  tasks:\n    - {{name: a, function: '{TASKS}:write', outputs: [{{name: out, destination: /mnt/user/a.txt}}]}}\n"
    for where in ("one", "two"):
        record = run(
            tmp_path, pipeline(tmp_path, body), mounts={"/mnt/user": str(tmp_path / where)}
        )
        assert record.state == "succeeded"
    assert (tmp_path / "two" / "a.txt").read_text() == "hello"


def test_a_url_prefix_can_be_mounted_and_paths_cannot_leave_a_mount(tmp_path: Path) -> None:
    body = f"  tasks:\n    - {{name: a, function: '{TASKS}:write', outputs: [{{name: out, destination: 'obs://bucket/a.txt'}}]}}\n"
    record = run(tmp_path, pipeline(tmp_path, body), mounts={"obs://bucket": str(tmp_path / "b")})
    assert (tmp_path / "b" / "a.txt").read_text() == "hello"
    body = f"  tasks:\n    - {{name: a, function: '{TASKS}:write', outputs: [{{name: out, destination: /mnt/user/../../x}}]}}\n"
    record = run(tmp_path, pipeline(tmp_path, body), mounts={"/mnt/user": str(tmp_path / "m")})
    assert record.state == "failed"
    assert "leaves the folder mounted" in RunStore().tasks(record.id)[0].error
    body = f"  tasks:\n    - {{name: a, function: '{TASKS}:write', outputs: [{{name: out, destination: 's3://b/x'}}]}}\n"
    record = run(tmp_path, pipeline(tmp_path, body))
    assert "is a URL" in RunStore().tasks(record.id)[0].error


def test_a_destination_that_cannot_be_written_fails_the_task_not_the_runner(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    body = f"  tasks:\n    - {{name: a, function: '{TASKS}:write', outputs: [{{name: out, destination: '{tmp_path}/afile/out.txt'}}]}}\n"
    record = run(tmp_path, pipeline(tmp_path, body))
    assert record.state == "failed"
    assert "could not be started" in RunStore().tasks(record.id)[0].error


def test_a_cancelled_run_can_be_resumed_to_the_end(tmp_path: Path) -> None:
    body = (
        f"  tasks:\n    - {{name: slow, function: '{TASKS}:sleep', parameters: {{seconds: 1.0}}}}\n"
    )
    cancelled = cancel_once_started(tmp_path, pipeline(tmp_path, body))
    assert cancelled.state == "cancelled"
    record = resume_run(cancelled.id)
    assert record.state == "succeeded", record.error
    assert not record.cancel_requested


def test_a_python_tasks_children_are_stopped_with_it(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    body = (
        f"  tasks:\n    - {{name: a, function: '{TASKS}:spawn_and_wait', timeout: 1.5,"
        f" parameters: {{pidfile: '{pidfile}'}}}}\n"
    )
    record = run(tmp_path, pipeline(tmp_path, body))
    assert record.state == "failed"
    pid = int(pidfile.read_text())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"the task's child {pid} outlived the timeout")


def test_gpu_tasks_get_their_own_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    body = (
        "  tasks:\n"
        + "".join(
            f"    - {{name: g{i}, function: '{TASKS}:gpus', resources: {{gpu: 1}}, outputs: [{{name: out}}]}}\n"
            for i in range(2)
        )
        + f"    - {{name: none, function: '{TASKS}:gpus', outputs: [{{name: out}}]}}\n"
    )
    record = run_pipeline(
        pipeline(tmp_path, body),
        options=RunOptions(outputs=str(tmp_path / "o")),
        executor=LocalExecutor(gpu=2, workers=3, cpu=3),
    )
    assert record.state == "succeeded", record.error
    seen = {n: Path(a.uri).read_text() for (n, _), a in RunStore().artifacts_of(record.id).items()}
    assert sorted([seen["g0"], seen["g1"]]) == ["3", "5"]
    assert seen["none"] == "3,5"  # a task that asks for no GPU is left as it was


def test_two_runners_ending_one_run_record_one_end(tmp_path: Path) -> None:
    body = f"  tasks:\n    - {{name: a, function: '{TASKS}:write', outputs: [{{name: out}}]}}\n"
    record = run(tmp_path, pipeline(tmp_path, body))
    store = RunStore()
    late = Changes(
        finish={
            "values": {"state": "failed"},
            "event": {
                "run_id": record.id,
                "task": None,
                "time": 0.0,
                "event": "run_failed",
                "data": None,
            },
        }
    )
    store.apply(record.id, "other", late)
    assert store.run(record.id).state == "succeeded"
    assert [e["event"] for e in store.events(record.id)].count("run_succeeded") == 1
    assert "run_failed" not in [e["event"] for e in store.events(record.id)]


def test_reads_do_not_wait_for_a_writer_on_sqlite(tmp_path: Path) -> None:
    store = RunStore()
    with db.write(store.engine) as conn:
        conn.exec_driver_sql("SELECT 1")
        result: dict[str, object] = {}
        reader = threading.Thread(target=lambda: result.update(runs=RunStore().list_runs()))
        reader.start()
        reader.join(10)
        assert result == {"runs": []}


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("not a database " * 100)
    with pytest.raises(DatabaseError, match="not a stagewise metadata database"):
        db.engine(f"sqlite:///{bogus}")
