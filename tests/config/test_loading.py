"""Safe YAML/JSON loading: lines of keys, refused constructs, and errors that name the place.

Every bad input must end in one ``ConfigError`` whose location names the file (and the line
where there is one) and whose hint says how to fix it; nothing else may escape.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from stagewise.config import (
    ActiveStage,
    DatasetConfig,
    StageConfig,
    StageSwitchEvent,
    dump_json,
    dump_yaml,
    load_model,
    parse_document,
)
from stagewise.config.base import FormatModel
from stagewise.config.loading import MAX_DEPTH, Document, format_key, parse_json, parse_yaml
from stagewise.errors import ConfigError, StagewiseError

SEED = Path(__file__).resolve().parents[1] / "assets" / "seed000"


def config_error(text: str | bytes, source: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_document(text, source)
    return info.value


def model_error(model: type[FormatModel], text: str | bytes, source: str) -> ConfigError:
    doc = parse_document(text, source)
    with pytest.raises(ConfigError) as info:
        load_model(model, doc)
    return info.value


def line_number(text: str, fragment: str, occurrence: int = 1) -> int:
    """The 1-based line of the ``occurrence``-th line containing ``fragment``."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if fragment in line]
    return hits[occurrence - 1]


def ordered(value: Any) -> Any:
    """Dicts as lists of pairs, so that == also compares key order."""
    if isinstance(value, dict):
        return [(k, ordered(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [ordered(v) for v in value]
    return value


# ------------------------------------------------------------------ lines of keys


YAML_TEXT = """\
# a comment on line 1
stages:
  pretraining:
    config_file: "stages/pretraining.json"
    auto_switch_conditions:
      - epoch: 0
        condition: "start"

      - epoch: 5
default_stage: pretraining
"""


def test_yaml_keys_have_their_lines() -> None:
    doc = parse_yaml(YAML_TEXT, "stage_config.yaml")
    assert doc.line_of(("stages",)) == 2
    assert doc.line_of(("stages", "pretraining")) == 3
    assert doc.line_of(("stages", "pretraining", "config_file")) == 4
    assert doc.line_of(("stages", "pretraining", "auto_switch_conditions")) == 5
    assert doc.line_of(("stages", "pretraining", "auto_switch_conditions", 0)) == 6
    assert doc.line_of(("stages", "pretraining", "auto_switch_conditions", 0, "condition")) == 7
    assert doc.line_of(("stages", "pretraining", "auto_switch_conditions", 1, "epoch")) == 9
    assert doc.line_of(("default_stage",)) == 10


def test_line_of_falls_back_to_the_nearest_ancestor() -> None:
    doc = parse_yaml(YAML_TEXT, "stage_config.yaml")
    assert doc.line_of(("stages", "pretraining", "priority")) == 3  # not written: its parent
    assert doc.line_of(("stages", "nosuch", "config_file")) == 2
    assert doc.line_of(("nosuch",)) == 2  # the document itself starts at its first key
    assert Document(data=None, source="x.yaml").line_of(("a",)) is None


JSON_TEXT = """\
{
    "meta": {
        "stage": "finetuning",
        "stage_config": {"data_ratio": {"a": 0.5,
                                        "b": 0.5}}
    },
    "dataset_index": [
        {
            "name": "a_one",
            "path": "data/a.jsonl"
        },
        {"name": "b_one", "path": "data/b.jsonl",
         "duplicate": 2}
    ]
}
"""


def test_json_keys_have_their_lines() -> None:
    doc = parse_json(JSON_TEXT, "stages/finetuning.json")
    assert doc.line_of(("meta",)) == 2
    assert doc.line_of(("meta", "stage")) == 3
    assert doc.line_of(("meta", "stage_config", "data_ratio", "a")) == 4
    assert doc.line_of(("meta", "stage_config", "data_ratio", "b")) == 5
    assert doc.line_of(("dataset_index",)) == 7
    assert doc.line_of(("dataset_index", 0)) == 8
    assert doc.line_of(("dataset_index", 0, "name")) == 9
    assert doc.line_of(("dataset_index", 0, "path")) == 10
    assert doc.line_of(("dataset_index", 1)) == 12
    assert doc.line_of(("dataset_index", 1, "duplicate")) == 13
    assert doc.line_of(("dataset_index", 1, "enabled")) == 12  # not written: the entry's line


def test_json_lines_survive_strings_that_look_like_syntax() -> None:
    text = '{"a": "{[,\\"}]\\n",\n "b": [1, "x]"],\n "c": {"d": null}}'
    doc = parse_json(text, "x.json")
    assert doc.data == {"a": '{[,"}]\n', "b": [1, "x]"], "c": {"d": None}}
    assert (doc.line_of(("a",)), doc.line_of(("b", 1)), doc.line_of(("c", "d"))) == (1, 2, 3)


def test_the_suffix_picks_the_format() -> None:
    assert parse_document('{"a": 1}', "X.JSON").data == {"a": 1}
    assert parse_document("a: 1", "x.yml").data == {"a": 1}
    # YAML would read this JSON-ish text too, but a .json file must be strict JSON
    assert parse_document("{a: 1}", "x.yaml").data == {"a": 1}
    assert "x.json:1" in config_error("{a: 1}", "x.json").render()


def test_format_key() -> None:
    assert format_key(("dataset_index", 0, "name")) == "dataset_index[0].name"
    assert format_key(("stages", "a", "auto_switch_conditions", 2)) == (
        "stages.a.auto_switch_conditions[2]"
    )
    assert format_key(()) == ""


# ------------------------------------------------------------------ duplicate keys


def test_duplicate_yaml_key_is_an_error_with_its_line() -> None:
    text = "stages:\n  a:\n    config_file: x.json\n    priority: 1\n    priority: 2\n"
    error = config_error(text, "stage_config.yaml")
    assert error.location == "stage_config.yaml:5"
    assert "'priority' appears twice" in error.headline
    assert error.hint


def test_duplicate_top_level_yaml_key() -> None:
    error = config_error("default_stage: a\nstages: {}\ndefault_stage: b\n", "s.yaml")
    assert error.location == "s.yaml:3"


def test_duplicate_json_key_is_an_error_with_its_line() -> None:
    text = '{\n  "dataset_index": [],\n  "dataset_index": []\n}\n'
    error = config_error(text, "stages/x.json")
    assert error.location == "stages/x.json:3"
    assert "'dataset_index' appears twice" in error.headline
    assert error.hint


def test_duplicate_json_key_names_the_right_object() -> None:
    # 'name' is written (once) in the first entry too: the error points at the repeat
    text = (
        "{\n"
        ' "dataset_index": [\n'
        '  {"name": "a", "path": "x"},\n'
        '  {"name": "b",\n'
        '   "name": "c", "path": "y"}\n'
        " ]\n"
        "}\n"
    )
    error = config_error(text, "stages/x.json")
    assert error.location == "stages/x.json:5"
    assert "dataset_index[1].name" in error.headline


def test_keys_repeated_in_different_objects_are_fine() -> None:
    doc = parse_json('[{"name": "a"},\n {"name": "b"}]', "x.json")
    assert doc.data == [{"name": "a"}, {"name": "b"}]
    assert parse_yaml("a: {x: 1}\nb: {x: 2}\n", "x.yaml").data == {"a": {"x": 1}, "b": {"x": 2}}


# ------------------------------------------------------------------ YAML that builds objects


@pytest.mark.parametrize(
    "text",
    [
        '!!python/object/apply:os.system ["touch CANARY"]\n',
        'stages: !!python/object/apply:os.system ["touch CANARY"]\n',
        "a: !!python/object/apply:subprocess.check_call [[touch, CANARY]]\n",
        "a: !!python/object/new:subprocess.Popen [[touch, CANARY]]\n",
        "a: !!python/object/new:os.system\n  args: [touch CANARY]\n",
        "a: !!python/object:pathlib.Path {}\n",
        "a: !!python/name:os.system\n",
        "a: !!python/module:os\n",
        "a: !!binary aGVsbG8=\n",
        "a: !custom value\n",
    ],
)
def test_yaml_tags_that_build_objects_are_refused(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    error = config_error(text, "stage_config.yaml")
    assert "tag" in error.headline and "not allowed" in error.headline
    assert error.location == "stage_config.yaml:1"
    assert error.hint
    error = config_error(text.encode(), str(tmp_path / "stage_config.yaml"))
    assert not (tmp_path / "CANARY").exists()
    assert not (Path.cwd() / "CANARY").exists()


def test_a_tag_deep_in_the_file_names_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = 'stages:\n  a:\n    config_file: x.json\n    name: !!python/object/apply:os.system ["touch CANARY"]\n'
    assert config_error(text, "stage_config.yaml").location == "stage_config.yaml:4"
    assert not (tmp_path / "CANARY").exists()


def test_plain_tags_are_allowed() -> None:
    doc = parse_yaml("a: !!str 10\nb: !!int '3'\nc: !!float 1\nd: !!null ''\n", "x.yaml")
    assert doc.data == {"a": "10", "b": 3, "c": 1.0, "d": None}


def billion_laughs(levels: int = 10, fanout: int = 10) -> str:
    names = [f"l{i}" for i in range(levels)]
    lines = [f"{names[0]}: &{names[0]} [{', '.join(['lol'] * fanout)}]"]
    for prev, name in itertools.pairwise(names):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * fanout)}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_at_a_bounded_size() -> None:
    text = billion_laughs()
    assert len(text) < 1200  # about 1 KB that would expand to 10**10 values
    error = config_error(text, "stage_config.yaml")  # stops after MAX_NODES values, not 10**10
    assert "expands to more than 200000 values" in error.headline
    assert error.location and error.location.startswith("stage_config.yaml:")
    assert error.hint


def test_a_few_aliases_are_fine() -> None:
    doc = parse_yaml("base: &b {x: 1}\na: *b\nc:\n  <<: *b\n  y: 2\n", "x.yaml")
    assert doc.data == {"base": {"x": 1}, "a": {"x": 1}, "c": {"x": 1, "y": 2}}


def test_an_alias_to_itself_is_refused() -> None:
    error = config_error("a: &x [1, *x]\n", "x.yaml")
    assert "refers to itself" in error.headline
    assert error.location == "x.yaml:1"
    assert error.hint


# ------------------------------------------------------------------ nesting


def test_nesting_within_the_limit_parses() -> None:
    depth = MAX_DEPTH
    assert parse_yaml("[" * depth + "]" * depth, "x.yaml").data is not None
    assert parse_json("[" * 200 + "]" * 200, "x.json").data is not None


@pytest.mark.parametrize("text", ["[" * 150 + "]" * 150, "{a: " * 150 + "1" + "}" * 150])
def test_deep_yaml_is_refused(text: str) -> None:
    error = config_error(text, "x.yaml")
    assert "nested more than" in error.headline
    assert error.location == "x.yaml:1"
    assert error.hint


def test_deep_block_yaml_names_the_line() -> None:
    text = "".join("  " * i + f"k{i}:\n" for i in range(150)) + "  " * 150 + "leaf\n"
    error = config_error(text, "x.yaml")
    assert "nested more than" in error.headline
    assert error.location is not None
    line = int(error.location.rpartition(":")[2])
    assert MAX_DEPTH <= line <= MAX_DEPTH + 3


def test_very_deep_yaml_does_not_crash_the_process() -> None:
    # ~30,000 levels used to overflow the C stack in libyaml's composer (a segfault)
    code = (
        "from stagewise.config.loading import parse_document\n"
        "from stagewise.errors import ConfigError\n"
        "for text in ('[' * 200000 + ']' * 200000, '{a: ' * 100000 + '1' + '}' * 100000):\n"
        "    try:\n"
        "        parse_document(text, 'x.yaml')\n"
        "    except ConfigError as exc:\n"
        "        print(exc.headline)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("nested more than") == 2


@pytest.mark.parametrize("depth", [5000, 100_000])
def test_deep_json_is_refused(depth: int) -> None:
    error = config_error("[" * depth + "]" * depth, "x.json")
    assert "nested too deeply" in error.headline
    assert error.hint
    error = config_error('{"a": ' * depth + "1" + "}" * depth, "x.json")
    assert "nested too deeply" in error.headline


def test_json_near_the_recursion_limit_gives_data_or_an_error() -> None:
    for depth in range(900, 1100, 7):
        try:
            parse_document("[" * depth + "]" * depth, "x.json")
            parse_document('{"a": ' * depth + "1" + "}" * depth, "x.json")
        except StagewiseError:
            pass


# ------------------------------------------------------------------ encodings


def test_invalid_utf8_names_the_line() -> None:
    raw = b"stages:\n  a:\n    name: caf\xe9\n    config_file: x.json\n"
    error = config_error(raw, "stage_config.yaml")
    assert error.location == "stage_config.yaml:3"
    assert "UTF-8" in error.headline
    assert error.hint and "UTF-8" in error.hint
    error = config_error(b'{"a":\n\n "\xff\xfe"}', "x.json")
    assert error.location == "x.json:3"


def test_latin1_or_utf16_files_are_refused() -> None:
    assert config_error("a: é".encode("latin-1"), "x.yaml").location == "x.yaml:1"
    with pytest.raises(ConfigError):
        parse_document('{"a": 1}'.encode("utf-16"), "x.json")


@pytest.mark.parametrize("source", ["x.yaml", "x.json"])
def test_a_byte_order_mark_is_accepted(source: str) -> None:
    body = '{"a": 1,\n "b": [2]}'
    doc = parse_document(b"\xef\xbb\xbf" + body.encode(), source)
    assert doc.data == {"a": 1, "b": [2]}
    assert doc.line_of(("b",)) == 2
    assert parse_document("\ufeff" + body, source).data == {"a": 1, "b": [2]}


def test_a_bom_in_a_seed_file_still_loads() -> None:
    raw = (SEED / "active_stage.yaml").read_bytes()
    doc = parse_document(b"\xef\xbb\xbf" + raw, "active_stage.yaml")
    assert load_model(ActiveStage, doc).current_stage == "pretraining"


def test_control_characters_are_refused_with_their_line() -> None:
    error = config_error("a: 1\nb: 2\x07\n", "x.yaml")
    assert error.location == "x.yaml:2"
    assert error.hint
    assert config_error("a: 1\x00\n", "x.yaml").location == "x.yaml:1"
    assert config_error('{"a": 1}\x00', "x.json").location == "x.json:1"


# ------------------------------------------------------------------ numbers


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_nan_and_infinity_are_refused(constant: str) -> None:
    text = (
        '{\n  "dataset_index": [\n    {"name": "a", "path": "x",\n     "stage_weight": '
        + constant
        + "}\n  ]\n}"
    )
    error = config_error(text, "stages/x.json")
    assert constant in error.headline
    assert error.location == "stages/x.json:4"
    assert error.hint


def test_nan_inside_a_string_is_just_text() -> None:
    assert parse_json('{"a": "NaN", "b": "Infinity"}', "x.json").data == {
        "a": "NaN",
        "b": "Infinity",
    }


def test_overflowing_numbers_are_refused_by_the_model() -> None:
    text = '{"dataset_index": [\n {"name": "a", "path": "x",\n  "duplicate": 1e400}]}'
    error = model_error(DatasetConfig, text, "stages/x.json")
    [problem] = error.problems
    assert problem.key == "dataset_index[0].duplicate"
    assert problem.line == 3
    assert "finite" in problem.message


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_yaml_nan_and_infinity_are_refused_by_the_model(value: str) -> None:
    text = f"current_stage: a\nhistory:\n  - stage: a\n    duration: {value}\n"
    error = model_error(ActiveStage, text, "active_stage.yaml")
    [problem] = error.problems
    assert (problem.key, problem.line) == ("history[0].duration", 4)


# ------------------------------------------------------------------ truncated and empty


def test_truncated_json_names_the_line() -> None:
    text = (SEED / "stages" / "finetuning.json").read_text(encoding="utf-8")
    cut = text[: text.index('"duplicate": 3')]
    error = config_error(cut, "stages/finetuning.json")
    assert "does not parse" in error.headline
    assert error.location is not None and error.location.startswith("stages/finetuning.json:")
    assert int(error.location.rpartition(":")[2]) >= cut.count("\n")
    assert error.hint


def test_truncated_yaml_names_the_line() -> None:
    text = (SEED / "active_stage.yaml").read_text(encoding="utf-8")
    cut = text[: text.index('"2025-09-25') + 5]  # inside a quoted string
    error = config_error(cut, "active_stage.yaml")
    assert "does not parse" in error.headline
    assert error.location is not None and error.location.startswith("active_stage.yaml:")
    assert error.hint


def test_yaml_with_an_unclosed_flow_list_names_the_line() -> None:
    error = config_error("a: [1, 2\nb: 3\n", "x.yaml")
    assert error.location == "x.yaml:2"


@pytest.mark.parametrize("text", ["", "   \n", "{", "[1,", '{"a": 1,}', '{"a" 1}', "{'a': 1}"])
def test_bad_json_is_one_config_error(text: str) -> None:
    error = config_error(text, "x.json")
    assert error.location is not None and error.location.startswith("x.json:")
    assert error.hint


@pytest.mark.parametrize(
    ("model", "source"),
    [
        (StageConfig, "stage_config.yaml"),
        (ActiveStage, "active_stage.yaml"),
        (DatasetConfig, "stages/x.yaml"),
    ],
)
@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "null\n", "~\n"])
def test_an_empty_yaml_file_is_one_clear_error(
    model: type[FormatModel], source: str, text: str
) -> None:
    doc = parse_document(text, source)
    assert doc.data is None
    with pytest.raises(ConfigError) as info:
        load_model(model, doc)
    assert "empty" in info.value.headline
    assert info.value.location == source
    assert info.value.hint


def test_several_yaml_documents_are_refused() -> None:
    error = config_error("a: 1\n---\nb: 2\n", "x.yaml")
    assert error.location == "x.yaml:2"


def test_a_mapping_key_must_be_plain() -> None:
    error = config_error("? [a, b]\n: 1\n", "x.yaml")
    assert error.location == "x.yaml:1"


# ------------------------------------------------------------------ wrong shapes and types


@pytest.mark.parametrize(
    ("model", "source", "text"),
    [
        (StageConfig, "stage_config.yaml", "- pretraining\n- finetuning\n"),
        (ActiveStage, "active_stage.yaml", "just text\n"),
        (DatasetConfig, "stages/x.json", "[1, 2, 3]"),
        (DatasetConfig, "stages/x.json", '"a string"'),
        (StageSwitchEvent, "stage_events.json", "42"),
    ],
)
def test_a_document_that_is_not_a_mapping(model: type[FormatModel], source: str, text: str) -> None:
    error = model_error(model, text, source)
    assert error.location == source
    [problem] = error.problems
    assert problem.file == source and problem.line == 1
    assert "valid dictionary" in problem.message


def test_a_list_where_a_mapping_is_expected() -> None:
    text = "stages:\n  - pretraining\n  - finetuning\n"
    error = model_error(StageConfig, text, "stage_config.yaml")
    [problem] = error.problems
    assert (problem.key, problem.line) == ("stages", 1)  # the line of the key
    assert problem.hint and "stages" in problem.hint


FINETUNING_WRONG_TYPES = """\
{
    "dataset_index": [
        {
            "name": "toll_station_scenarios_refined",
            "path": "data/toll.jsonl",
            "duplicate": "ten",
            "enabled": "yes"
        }
    ]
}
"""


def test_wrong_types_in_a_stage_json_name_key_and_line() -> None:
    error = model_error(DatasetConfig, FINETUNING_WRONG_TYPES, "stages/finetuning.json")
    assert error.location == "stages/finetuning.json"
    by_key = {p.key: p for p in error.problems}
    assert set(by_key) == {"dataset_index[0].duplicate", "dataset_index[0].enabled"}
    assert by_key["dataset_index[0].duplicate"].line == 6
    assert by_key["dataset_index[0].enabled"].line == 7
    assert "'ten'" in by_key["dataset_index[0].duplicate"].message
    assert "'yes'" in by_key["dataset_index[0].enabled"].message
    for problem in error.problems:
        assert problem.file == "stages/finetuning.json"
        assert problem.hint and problem.hint.startswith("expected:")
    rendered = error.render()
    assert "stages/finetuning.json:6 (dataset_index[0].duplicate)" in rendered
    assert "stages/finetuning.json:7 (dataset_index[0].enabled)" in rendered
    assert "fix:" in rendered


@pytest.mark.parametrize(
    ("model", "source", "text", "key", "line"),
    [
        (DatasetConfig, "x.json", '{\n  "meta": {}\n}', "dataset_index", 1),
        (
            DatasetConfig,
            "x.json",
            '{"dataset_index": [\n  {"path": "x"}]}',
            "dataset_index[0].name",
            2,
        ),
        (ActiveStage, "active_stage.yaml", "activated_by: user\nhistory: []\n", "current_stage", 1),
        (
            ActiveStage,
            "active_stage.yaml",
            "current_stage: a\nhistory:\n  - reason: r\n",
            "history[0].stage",
            3,
        ),
        (StageConfig, "stage_config.yaml", "default_stage: a\n", "stages", 1),
        (
            StageConfig,
            "stage_config.yaml",
            "stages:\n  a:\n    variants:\n      v1: {weight: 1}\n",
            "stages.a.variants.v1.config_file",
            4,
        ),
        (
            StageSwitchEvent,
            "e.json",
            '{"timestamp": "t", "trigger": "auto",\n "from_stage": null}',
            "to_stage",
            1,
        ),
    ],
)
def test_missing_required_keys(
    model: type[FormatModel], source: str, text: str, key: str, line: int
) -> None:
    error = model_error(model, text, source)
    problem = next(p for p in error.problems if p.key == key)
    assert problem.message == "a required key is missing"
    assert problem.line == line
    assert problem.file == source


def test_a_dataset_needs_a_location() -> None:
    text = '{"dataset_index": [\n  {"name": "a"}]}'
    [problem] = model_error(DatasetConfig, text, "x.json").problems
    assert (problem.key, problem.line) == ("dataset_index[0]", 2)
    assert "'path' or 'obs_path'" in problem.message


@pytest.mark.parametrize("field", ["stage_weight", "duplicate"])
def test_negative_numbers_are_refused(field: str) -> None:
    text = (
        '{\n  "dataset_index": [\n    {"name": "a", "path": "x",\n     "'
        + field
        + '": -0.5}\n  ]\n}'
    )
    [problem] = model_error(DatasetConfig, text, "stages/x.json").problems
    assert problem.key == f"dataset_index[0].{field}"
    assert problem.line == 4
    assert ">= 0" in problem.message
    assert problem.hint


def test_booleans_are_not_numbers() -> None:
    text = '{"dataset_index": [{"name": "a", "path": "x", "stage_weight": true}]}'
    [problem] = model_error(DatasetConfig, text, "x.json").problems
    assert problem.key == "dataset_index[0].stage_weight"


def test_strings_are_not_coerced() -> None:
    text = "current_stage: a\nhistory:\n  - stage: a\n    duration: '10'\n"
    [problem] = model_error(ActiveStage, text, "active_stage.yaml").problems
    assert (problem.key, problem.line) == ("history[0].duration", 4)


def test_problems_in_stages_by_name_have_hints() -> None:
    text = "stages:\n  a:\n    config_file: x.json\n    priority: high\n"
    [problem] = model_error(StageConfig, text, "stage_config.yaml").problems
    assert (problem.key, problem.line) == ("stages.a.priority", 4)
    assert problem.hint and problem.hint.startswith("expected:")


def test_several_independent_errors_are_reported_at_once() -> None:
    text = """\
{
    "meta": {
        "stage_config": {
            "data_ratio": {"toll_station": "most"},
            "max_clips_per_dataset": 0,
            "shuffle": "no"
        }
    },
    "dataset_index": [
        {"name": "a", "path": "x", "duplicate": "ten"},
        {"name": "b", "path": "y", "enabled": "yes"},
        {"name": "c", "path": "z", "stage_weight": -1},
        {"path": "w", "sampling_priority": "urgent"}
    ]
}
"""
    error = model_error(DatasetConfig, text, "stages/finetuning.json")
    found = {(p.key, p.line) for p in error.problems}
    assert found == {
        ("meta.stage_config.data_ratio.toll_station", 4),
        ("meta.stage_config.max_clips_per_dataset", 5),
        ("meta.stage_config.shuffle", 6),
        ("dataset_index[0].duplicate", 10),
        ("dataset_index[1].enabled", 11),
        ("dataset_index[2].stage_weight", 12),
        ("dataset_index[3].name", 13),
        ("dataset_index[3].sampling_priority", 13),
    }
    assert error.headline == "8 problems in this DatasetConfig"
    assert all(p.file == "stages/finetuning.json" for p in error.problems)


def test_several_errors_in_a_stage_config_are_reported_at_once() -> None:
    text = """\
stages:
  a:
    config_file: a.json
    priority: first
    trigger_mode: sometimes
  b:
    description: no config
switch_strategy:
  mode: fast
  check_interval: 0
"""
    error = model_error(StageConfig, text, "stage_config.yaml")
    assert {(p.key, p.line) for p in error.problems} == {
        ("stages.a.priority", 4),
        ("stages.a.trigger_mode", 5),
        ("stages.b", 6),
        ("switch_strategy.mode", 9),
        ("switch_strategy.check_interval", 10),
    }


def test_the_error_is_a_stagewise_error_that_renders_everything() -> None:
    error = model_error(DatasetConfig, FINETUNING_WRONG_TYPES, "stages/finetuning.json")
    assert isinstance(error, StagewiseError)
    data = error.to_dict()
    assert data["error"] == "ConfigError"
    assert [p["line"] for p in data["problems"]] == [6, 7]  # type: ignore[union-attr]
    assert "Traceback" not in str(error)


# ------------------------------------------------------------------ round trips


SEED_FILES = [
    ("stage_config.yaml", StageConfig),
    ("active_stage.yaml", ActiveStage),
    ("stages/pretraining.json", DatasetConfig),
    ("stages/finetuning.json", DatasetConfig),
    ("stage_switch_event.json", StageSwitchEvent),
]


@pytest.mark.parametrize(("name", "model"), SEED_FILES, ids=[n for n, _ in SEED_FILES])
def test_seed_examples_load_and_round_trip(name: str, model: type[FormatModel]) -> None:
    doc = parse_document((SEED / name).read_bytes(), name)
    loaded = load_model(model, doc)
    assert loaded.to_data() == doc.data
    assert ordered(loaded.to_data()) == ordered(doc.data)  # same key order, all the way down
    assert loaded.unknown_keys() == []
    # written back and read again, the content is unchanged
    text = dump_json(loaded.to_data()) if name.endswith(".json") else dump_yaml(loaded.to_data())
    again = parse_document(text, name)
    assert ordered(load_model(model, again).to_data()) == ordered(doc.data)


def test_seed_values_keep_their_written_types() -> None:
    doc = parse_document((SEED / "stages" / "pretraining.json").read_bytes(), "p.json")
    config = load_model(DatasetConfig, doc)
    first = config.dataset_index[0]
    assert first.duplicate == 10 and isinstance(first.duplicate, int)
    assert first.stage_weight == 0.4 and isinstance(first.stage_weight, float)
    assert config.meta is not None and config.meta.description == "预训练阶段基础数据集"


def test_unknown_keys_are_kept_and_reported() -> None:
    data = json.loads((SEED / "stages" / "finetuning.json").read_text(encoding="utf-8"))
    data["owner"] = "data-team"
    data["meta"]["stage_config"]["augmentation"]["strength"] = 0.3
    data["dataset_index"][1]["stage_weght"] = 0.3  # a typo stays, and is reported
    data["dataset_index"][1]["tags"] = {"nested": [1, {"deep": True}]}
    text = json.dumps(data, indent=4, ensure_ascii=False)
    doc = parse_document(text, "stages/finetuning.json")
    config = load_model(DatasetConfig, doc)
    assert ordered(config.to_data()) == ordered(data)
    unknown = {path: known for path, known in config.unknown_keys()}
    assert set(unknown) == {
        ("owner",),
        ("meta", "stage_config", "augmentation", "strength"),
        ("dataset_index", 1, "stage_weght"),
        ("dataset_index", 1, "tags"),
    }
    assert "stage_weight" in unknown[("dataset_index", 1, "stage_weght")]
    # a change by the program keeps the unknown keys and the order
    config.dataset_index[0].enabled = False
    changed = config.to_data()
    assert changed["owner"] == "data-team"
    assert list(changed["dataset_index"][1]) == list(data["dataset_index"][1])
    assert changed["dataset_index"][0]["enabled"] is False


def test_unknown_keys_in_yaml_files_round_trip() -> None:
    text = (SEED / "active_stage.yaml").read_text(encoding="utf-8")
    text += "owner: ml-platform\n"
    text = text.replace(
        '  predicted_stage: "finetuning"', '  predicted_stage: "finetuning"\n  confidence: 0.8'
    )
    doc = parse_document(text, "active_stage.yaml")
    active = load_model(ActiveStage, doc)
    assert ordered(active.to_data()) == ordered(doc.data)
    assert [path for path, _ in active.unknown_keys()] == [
        ("owner",),
        ("next_stage", "confidence"),
    ]
    again = parse_document(dump_yaml(active.to_data()), "active_stage.yaml")
    assert ordered(again.data) == ordered(doc.data)


def test_stage_config_unknown_keys_under_stages_and_variants() -> None:
    text = (SEED / "stage_config.yaml").read_text(encoding="utf-8")
    text = text.replace("    priority: 1\n", "    priority: 1\n    owner: alice\n", 1)
    text = text.replace("        weight: 0.5\n", "        weight: 0.5\n        colour: red\n", 1)
    doc = parse_document(text, "stage_config.yaml")
    config = load_model(StageConfig, doc)
    assert ordered(config.to_data()) == ordered(doc.data)
    assert {path for path, _ in config.unknown_keys()} == {
        ("stages", "pretraining", "owner"),
        ("stages", "ab_testing", "variants", "variant_a", "colour"),
    }


def test_yaml_dates_stay_text() -> None:
    doc = parse_document("current_stage: a\nactivated_at: 2025-09-23 10:30:00\n", "a.yaml")
    active = load_model(ActiveStage, doc)
    assert active.activated_at == "2025-09-23 10:30:00"


def test_seed_yaml_can_be_read_by_plain_pyyaml_after_dump() -> None:
    doc = parse_document((SEED / "stage_config.yaml").read_bytes(), "stage_config.yaml")
    config = load_model(StageConfig, doc)
    assert yaml.safe_load(dump_yaml(config.to_data())) == doc.data


@pytest.mark.parametrize("text", ["a: !!int abc", "a: !!bool maybe", "a: !!float x"])
def test_a_plain_tag_on_a_value_it_cannot_read_is_a_located_error(text: str) -> None:
    with pytest.raises(ConfigError, match=r"f\.yaml:1: .* is not a valid"):
        parse_yaml(text, "f.yaml")
