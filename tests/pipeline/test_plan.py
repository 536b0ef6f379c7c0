"""Checks before anything runs: every problem at once, each with its YAML line."""

from __future__ import annotations

from pathlib import Path

import pytest

from stagewise.errors import ConfigError, PipelineError
from stagewise.pipeline.resources import Request, parse_request
from stagewise.pipeline.spec import load_pipeline

HEAD = "apiVersion: stagewise/v1\nkind: Pipeline\nmetadata: {name: p}\nspec:\n"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(HEAD + body)
    return path


def problems(tmp_path: Path, body: str) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        load_pipeline(write(tmp_path, body))
    return [p.render() for p in caught.value.problems]


def test_the_seed_example_plans_in_the_declared_order() -> None:
    seed = Path(__file__).parents[2] / "examples" / "three-stage" / "incremental-learning.yaml"
    planned = load_pipeline(seed).plan
    assert list(planned.tasks) == [
        "data-preparation",
        "model-training",
        "model-evaluation",
        "model-deployment",
    ]
    assert planned.tasks["model-training"].request == Request(cpu=8, memory=16 * 2**30, gpu=1)


def test_a_cycle_is_printed_as_a_path(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        "  tasks:\n"
        "    - {name: a, function: 'tests.pipeline.sample_tasks:write'}\n"
        "    - {name: b, function: 'tests.pipeline.sample_tasks:write'}\n"
        "    - {name: c, function: 'tests.pipeline.sample_tasks:write'}\n"
        "  dependencies:\n"
        "    - {from: a, to: b}\n"
        "    - {from: b, to: c}\n"
        "    - {from: c, to: a}\n",
    )
    assert len(found) == 1
    assert "the tasks form a cycle: a -> b -> c -> a" in found[0]


def test_declared_order_that_contradicts_the_wiring_says_so(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        "  tasks:\n"
        "    - {name: a, function: 'tests.pipeline.sample_tasks:write', outputs: [{name: o}]}\n"
        "    - {name: b, function: 'tests.pipeline.sample_tasks:write', inputs: [{name: i, source: '${tasks.a.outputs.o}'}]}\n"
        "  dependencies:\n"
        "    - {from: b, to: a}\n",
    )
    assert "contradict the wiring" in found[0]
    assert "'b' reads a.outputs.o" in found[0]
    assert "declared (line 9)" in found[0]


def test_a_path_written_by_one_task_and_read_by_another_orders_them(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "  tasks:\n"
        "    - {name: reader, function: 'tests.pipeline.sample_tasks:write', inputs: [{name: i, source: /data/out/part-1}]}\n"
        "    - {name: writer, function: 'tests.pipeline.sample_tasks:write', outputs: [{name: o, destination: /data/out}]}\n",
    )
    planned = load_pipeline(path).plan
    assert list(planned.tasks) == ["writer", "reader"]
    assert planned.tasks["reader"].upstream == ("writer",)


def test_every_problem_is_reported_at_once_with_its_line(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        "  parameters: {lr: 0.1}\n"
        "  tasks:\n"
        "    - name: a\n"  # line 7
        "      function: tests.pipeline.sample_tasks:write\n"
        "      outputs: [{name: o, destination: /tmp/x}]\n"
        "      resources: {cpu: '0'}\n"  # line 10
        "    - {name: b, type: pyton}\n"  # line 11
        "    - {name: a, function: 'tests.pipeline.sample_tasks:write', parameters: {x: '${parameters.lrr}'}}\n"  # 12
        "    - {name: c, function: 'tests.pipeline.sample_tasks:write', outputs: [{name: o, destination: /tmp/x}],"
        " inputs: [{name: i, source: '${tasks.zz.outputs.o}'}]}\n"  # 13
        "  dependencies:\n"
        "    - {from: q, to: a}\n",  # 15
    )
    text = "\n".join(found)
    assert "pipeline.yaml:12" in text and "did you mean 'lr'?" in text
    assert "task name 'a' is used twice" in text
    assert "pipeline.yaml:10" in text and "cpu must be more than 0" in text
    assert "unknown task type 'pyton'" in text and "did you mean 'python'?" in text
    assert "${tasks.zz.outputs.o} names a task that does not exist" in text
    assert "'/tmp/x' is written by two tasks: 'a' and 'c'" in text
    assert "pipeline.yaml:15" in text and "dependency from 'q'" in text
    assert len(found) == 7


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("    - {name: a, type: shell}\n", "needs a 'command'"),
        ("    - {name: a}\n", "needs a 'function'"),
        ("    - {name: a, function: nocolon}\n", "must look like 'package.module:function'"),
        (
            "    - {name: a, function: 'tests.pipeline.sample_tasks:write', command: ls}\n",
            "is not a shell task",
        ),
        (
            "    - {name: a, function: 'tests.pipeline.sample_tasks:write', parameters: {x: '${oops}'}}\n",
            "not a reference",
        ),
        (
            "    - {name: a, function: 'tests.pipeline.sample_tasks:write', outputs: [{name: o}]}\n"
            "    - {name: b, function: 'tests.pipeline.sample_tasks:write', parameters: {x: '${tasks.a.outputs.p}'}}\n",
            "task 'a' has no output 'p'",
        ),
        (
            "    - {name: a, function: 'tests.pipeline.sample_tasks:write', resources: {gpu: 1.5}}\n",
            "fraction of a GPU",
        ),
        (
            "    - {name: a, function: 'tests.pipeline.sample_tasks:write', resources: {memory: 4Zi}}\n",
            "memory must look like",
        ),
    ],
)
def test_task_problems(tmp_path: Path, body: str, message: str) -> None:
    assert any(message in p for p in problems(tmp_path, "  tasks:\n" + body))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("  tasks: []\n", "at least 1 item"),
        (
            "  tasks:\n    - {name: 'bad name', function: 'tests.pipeline.sample_tasks:write'}\n",
            "should match pattern",
        ),
        (
            "  tasks:\n    - {name: a, function: 'tests.pipeline.sample_tasks:write', retries: -1}\n",
            "greater than or equal to 0",
        ),
        (
            "  tasks:\n    - {name: a, function: 'tests.pipeline.sample_tasks:write', timeout: soon}\n",
            "expected a duration",
        ),
    ],
)
def test_schema_problems_are_config_errors_with_lines(
    tmp_path: Path, body: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_pipeline(write(tmp_path, body))
    assert message in str(caught.value)
    assert "pipeline.yaml:" in str(caught.value)


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("apiVersion: [unclosed\n")
    with pytest.raises(ConfigError, match="does not parse"):
        load_pipeline(path)


def test_a_missing_file_is_a_pipeline_error(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="cannot read the pipeline file"):
        load_pipeline(tmp_path / "nope.yaml")


def test_unknown_keys_are_warnings_with_a_suggestion(tmp_path: Path) -> None:
    loaded = load_pipeline(
        write(
            tmp_path,
            "  tasks:\n    - {name: a, function: 'tests.pipeline.sample_tasks:write', retry: 3}\n",
        )
    )
    assert [w.message for w in loaded.warnings] == [
        "unknown key 'retry' is ignored (did you mean 'retries'?)"
    ]


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({"cpu": "500m"}, Request(0.5, 0, 0)),
        ({"cpu": 2, "memory": "4Gi", "gpu": "1"}, Request(2, 4 * 2**30, 1)),
        ({"cpu": "1", "memory": "512Mi", "gpu": 0.5}, Request(1, 512 * 2**20, 0.5)),
        ({"memory": "2G"}, Request(1, 2 * 10**9, 0)),
    ],
)
def test_resource_quantities(resources: dict, expected: Request) -> None:
    from stagewise.config.pipeline import Resources

    assert parse_request(Resources.model_validate(resources)) == expected


def test_parameters_resolve_with_their_type_and_commands_are_quoted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "  parameters: {epochs: 3, name: 'a b; rm -rf x'}\n"
        "  tasks:\n"
        "    - {name: a, function: 'tests.pipeline.sample_tasks:write', parameters: {n: '${parameters.epochs}', s: 'e=${parameters.epochs}'}}\n"
        "    - {name: b, type: shell, command: 'echo ${parameters.name}'}\n",
    )
    tasks = load_pipeline(path).plan.tasks
    assert tasks["a"].spec.parameters == {"n": 3, "s": "e=3"}
    assert tasks["b"].spec.command == "echo 'a b; rm -rf x'"


def test_overrides_set_parameters_and_task_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "  parameters: {training: {learning_rate: 0.1}}\n"
        "  tasks:\n"
        "    - {name: a, function: 'tests.pipeline.sample_tasks:write', parameters: {lr: '${parameters.training.learning_rate}'}}\n",
    )
    planned = load_pipeline(path, ["training.learning_rate=3e-4", "tasks.a.retries=2"]).plan
    assert planned.tasks["a"].spec.parameters == {"lr": 0.0003}
    assert planned.tasks["a"].spec.retries == 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.learning_rat=1", "did you mean"),
        ("tasks.zz.retries=2", "there is no task 'zz'"),
        ("nokey", "Could not parse override"),
    ],
)
def test_bad_overrides_are_config_errors(tmp_path: Path, override: str, message: str) -> None:
    path = write(
        tmp_path,
        "  parameters: {training: {learning_rate: 0.1}}\n  tasks:\n    - {name: a, function: 'tests.pipeline.sample_tasks:write'}\n",
    )
    with pytest.raises(ConfigError, match=message):
        load_pipeline(path, [override])


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("no_such_module:f", "cannot import module 'no_such_module'"),
        ("tests.pipeline.sample_tasks:nope", "defines no 'nope'"),
        ("missing/file.py:f", "the file missing/file.py does not exist"),
    ],
)
def test_a_function_that_cannot_be_imported_is_found_before_the_run(
    tmp_path: Path, function: str, message: str
) -> None:
    assert any(
        message in p
        for p in problems(tmp_path, f"  tasks:\n    - {{name: a, function: '{function}'}}\n")
    )
