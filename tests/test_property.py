"""Property tests: whatever text or data comes in, the result is a parsed value or one
``StagewiseError``, never another exception."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

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
from stagewise.errors import ConditionSyntaxError, StagewiseError
from stagewise.release import conditions

SEED = Path(__file__).parent / "assets" / "seed000"
MODELS: list[type[FormatModel]] = [StageConfig, ActiveStage, DatasetConfig, StageSwitchEvent]
SEEDS: dict[type[FormatModel], tuple[str, Any]] = {
    StageConfig: ("stage_config.yaml", None),
    ActiveStage: ("active_stage.yaml", None),
    DatasetConfig: ("stages/finetuning.json", None),
    StageSwitchEvent: ("stage_switch_event.json", None),
}
SEEDS = {
    model: (name, parse_document((SEED / name).read_bytes(), name).data)
    for model, (name, _) in SEEDS.items()
}

FAST = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
FEWER = settings(FAST, max_examples=300)


# ------------------------------------------------------------------ conditions


def parse_or_error(text: str) -> conditions.Node | None:
    try:
        return conditions.parse(text)
    except ConditionSyntaxError as exc:
        assert exc.headline and exc.hint
        return None
    except StagewiseError:
        return None


def metric_values() -> st.SearchStrategy[dict[str, object]]:
    values = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-1000, 1000),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=3),
    )
    return st.dictionaries(st.sampled_from(["a", "b", "loss", "epoch", "eval/loss"]), values)


@FAST
@given(st.text(max_size=200))
def test_any_text_parses_or_is_a_syntax_error(text: str) -> None:
    parse_or_error(text)


CONDITION_CHARS = "abelnostr_ ()<>=!&|./0123456789eE+-'\"\t\n"


@FAST
@given(st.text(alphabet=CONDITION_CHARS, max_size=80), metric_values())
def test_condition_like_text_parses_or_is_a_syntax_error(
    text: str, values: dict[str, object]
) -> None:
    node = parse_or_error(text)
    if node is not None:
        assert isinstance(conditions.evaluate(node, values), bool)


TOKENS = [
    "a", "loss", "epoch", "eval/loss", "start", "1", "0.5", "1e3", ".5", "and", "or", "not",
    "(", ")", "<", "<=", "==", "!=", ">", ">=", "true", "false", "=", "&&", "||", "!", ",",
]  # fmt: skip


@FAST
@given(st.lists(st.sampled_from(TOKENS), max_size=30), metric_values())
def test_token_soup_parses_or_is_a_syntax_error(
    tokens: list[str], values: dict[str, object]
) -> None:
    node = parse_or_error(" ".join(tokens))
    if node is not None:
        assert isinstance(conditions.evaluate(node, values), bool)
        assert conditions.flags(node) <= {t for t in tokens if t[0].isalpha()}


def expressions() -> st.SearchStrategy[str]:
    names = st.sampled_from(["loss", "epoch", "acc", "eval/loss", "converged"])
    numbers = st.one_of(st.integers(0, 1000).map(str), st.floats(0, 100, allow_nan=False).map(repr))
    ops = st.sampled_from(["<", "<=", ">", ">=", "==", "!="])
    comparison = st.builds(lambda a, o, b: f"{a} {o} {b}", names, ops, numbers)
    atom = st.one_of(comparison, names, st.sampled_from(["true", "false"]))
    return st.recursive(
        atom,
        lambda inner: st.one_of(
            inner.map(lambda e: f"not {e}"),
            inner.map(lambda e: f"({e})"),
            st.builds(lambda a, b: f"{a} and {b}", inner, inner),
            st.builds(lambda a, b: f"{a} or {b}", inner, inner),
        ),
        max_leaves=12,
    )


@FAST
@given(expressions(), metric_values())
def test_well_formed_conditions_parse_and_evaluate(text: str, values: dict[str, object]) -> None:
    assume(len(text) <= conditions.MAX_LENGTH)
    try:
        node = conditions.parse(text)
    except ConditionSyntaxError as exc:  # only too deep a nesting may refuse a valid form
        assert "nests more than" in exc.headline
        return
    assert isinstance(conditions.evaluate(node, values), bool)
    named = conditions.compile_named({"converged": "loss < 0.05"})
    assert isinstance(conditions.evaluate(node, values, named), bool)


@FEWER
@given(st.dictionaries(st.sampled_from("abcde"), st.lists(st.sampled_from("abcde"), max_size=3)))
def test_named_condition_tables_compile_or_report_a_cycle(table: dict[str, list[str]]) -> None:
    definitions = {name: " or ".join(refs) or "epoch > 1" for name, refs in table.items()}
    try:
        named = conditions.compile_named(definitions)
    except StagewiseError as exc:
        assert "cycle" in exc.headline
        return
    for name in named:  # no cycle: evaluation ends
        assert isinstance(conditions.evaluate(named[name], {"epoch": 2}, named), bool)


# ------------------------------------------------------------------ documents


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
keys = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "stages", "default_stage", "switch_strategy", "conditions", "config_file",
            "variants", "weight", "current_stage", "history", "stage", "dataset_index",
            "name", "path", "obs_path", "duplicate", "stage_weight", "enabled", "meta",
            "stage_config", "data_ratio", "timestamp", "to_stage", "trigger",
        ]
    ),
)  # fmt: skip
json_like = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=25,
)


def load_all(text: str | bytes, source: str) -> None:
    """parse_document + load_model for every model: data, or one StagewiseError."""
    try:
        doc = parse_document(text, source)
    except StagewiseError as exc:
        assert exc.headline and exc.location and exc.location.startswith(source)
        return
    for model in MODELS:
        try:
            loaded = load_model(model, doc)
        except StagewiseError as exc:
            assert exc.location == source
            assert all(p.file == source for p in exc.problems)
            continue
        assert_round_trip(loaded, doc.data, source)


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN and key order compared too."""
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def assert_round_trip(loaded: FormatModel, data: Any, source: str) -> None:
    assert same(loaded.to_data(), data)


@FAST
@given(json_like)
def test_random_documents_as_json(data: Any) -> None:
    text = json.dumps(data, ensure_ascii=False)  # NaN and Infinity included: must be refused
    load_all(text, "stages/random.json")


@FAST
@given(json_like)
def test_random_documents_as_yaml(data: Any) -> None:
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    load_all(text, "random.yaml")


@FAST
@given(st.text(max_size=300), st.sampled_from(["x.json", "x.yaml"]))
def test_random_text(text: str, source: str) -> None:
    load_all(text, source)


YAML_CHARS = "ab:-[]{},&*!|>'\"#%@`? \n\t0.1eE~"


@FAST
@given(st.text(alphabet=YAML_CHARS, max_size=200))
def test_yaml_like_text(text: str) -> None:
    load_all(text, "stage_config.yaml")


JSON_CHARS = '{}[],:"ab01.eE-+ \nNaINfinty\\u'


@FAST
@given(st.text(alphabet=JSON_CHARS, max_size=200))
def test_json_like_text(text: str) -> None:
    load_all(text, "stages/x.json")


@FEWER
@given(st.binary(max_size=200), st.sampled_from(["x.json", "x.yaml"]))
def test_random_bytes(raw: bytes, source: str) -> None:
    load_all(raw, source)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


def replaced(data: Any, path: tuple[Any, ...], new: Any, delete: bool) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(data))
    parent = copy
    for part in path[:-1]:
        parent = parent[part]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return copy


@FAST
@given(st.sampled_from(MODELS), st.data())
def test_seed_documents_with_one_value_changed(
    model: type[FormatModel], data: st.DataObject
) -> None:
    """A seed example with one value replaced or removed: loads, or one clear error."""
    name, seed = SEEDS[model]
    path = data.draw(st.sampled_from(paths(seed)))
    new = data.draw(json_like)
    delete = bool(path) and data.draw(st.booleans())
    changed = replaced(seed, path, new, delete)
    as_json = name.endswith(".json")
    text = json.dumps(changed, ensure_ascii=False) if as_json else dump_yaml(changed)
    try:
        doc = parse_document(text, name)
    except StagewiseError:
        assert as_json  # only JSON refuses NaN and Infinity at parse time
        return
    try:
        loaded = load_model(model, doc)
    except StagewiseError as exc:
        if doc.data is None:
            assert "empty" in exc.headline
            return
        assert exc.problems, "a model error lists its problems"
        for problem in exc.problems:
            assert problem.file == name and problem.line is not None and problem.key is not None
        return
    assert_round_trip(loaded, doc.data, name)
    # what is saved reads back as the same document
    saved = dump_json(loaded.to_data()) if as_json else dump_yaml(loaded.to_data())
    assert same(load_model(model, parse_document(saved, name)).to_data(), doc.data)
