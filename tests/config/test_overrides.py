"""Command-line overrides: Hydra's grammar, values read as Hydra reads them, and every
problem reported at once as one ``ConfigError`` that names the argument and the fix."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stagewise.config.overrides import (
    MAX_DIRNAME,
    Override,
    apply_overrides,
    override_dirname,
    parse_override,
    parse_overrides,
)
from stagewise.errors import ConfigError

CONFIG: dict[str, Any] = {
    "training": {"learning_rate": 0.1, "epochs": 3, "betas": [0.9, 0.99]},
    "model": {"name": "tiny", "layers": [{"width": 64}, {"width": 32}]},
    "seed": 1,
    "debug": True,
}


def apply(*texts: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return apply_overrides(CONFIG if data is None else data, parse_overrides(texts))


def apply_error(*texts: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        apply(*texts)
    return info.value


def parse_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_override(text)
    return info.value


# ---------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "kind", "path", "value"),
    [
        ("training.learning_rate=3e-4", "set", ("training", "learning_rate"), 3e-4),
        ("+extra=1", "add", ("extra",), 1),
        ("++extra=1", "force", ("extra",), 1),
        ("~debug", "delete", ("debug",), None),
        ("~debug=true", "delete", ("debug",), True),
        ("a.b[0].c=1", "set", ("a", "b", 0, "c"), 1),
        ("a.b.0.c=1", "set", ("a", "b", "0", "c"), 1),  # an index only where a list is
        ("  seed = 5 ", "set", ("seed",), 5),
        ("name=a=b", "set", ("name",), "a=b"),
    ],
)
def test_parse_override(text: str, kind: str, path: tuple[str | int, ...], value: Any) -> None:
    override = parse_override(text)
    assert (override.kind, override.path, override.value, override.text) == (
        kind,
        path,
        value,
        text,
    )


def test_a_delete_tells_a_missing_value_from_null() -> None:
    assert not parse_override("~seed").has_value
    assert parse_override("~seed=null").has_value
    assert parse_override("seed=null").has_value


# Hydra's reading, not YAML 1.1's: ``3e-4`` and ``1e5`` are floats (YAML 1.1 says strings),
# and ``0x10``, ``007``, ``yes``, ``~`` and ``1:30`` stay strings (YAML 1.1 says 16, 7,
# True, None and 90). Inside lists and mappings the same rules hold.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3e-4", 0.0003),
        ("1e5", 100000.0),
        ("1E+5", 100000.0),
        ("-2.5e-3", -0.0025),
        (".5", 0.5),
        ("1.", 1.0),
        ("10", 10),
        ("-3", -3),
        ("+7", 7),
        ("1_000", 1000),
        ("0", 0),
        ("0x10", "0x10"),
        ("007", "007"),
        ("1:30", "1:30"),
        ("true", True),
        ("False", False),
        ("yes", "yes"),
        ("null", None),
        ("NULL", None),
        ("~", "~"),
        ("'quoted'", "quoted"),
        ('"10"', "10"),
        ("'it''s'", "it's"),
        ('"tab\\there"', "tab\there"),
        ("[1, 2]", [1, 2]),
        ("[]", []),
        ("{a: 1}", {"a": 1}),
        ("{}", {}),
        ("[3e-4, 0x10, yes, null, 'x', [1e5]]", [0.0003, "0x10", "yes", None, "x", [100000.0]]),
        ("{lr: 3e-4, name: 'a b', on: true}", {"lr": 0.0003, "name": "a b", "on": True}),
        ("", ""),
        ("hello world", "hello world"),
        ("${oc.env:HOME}", "${oc.env:HOME}"),
        ("!!python/object:os.system", "!!python/object:os.system"),  # just text
        ("héllo", "héllo"),
        ("['\u2028', é]", ["\u2028", "é"]),
    ],
)
def test_values_are_read_as_hydra_reads_them(text: str, expected: Any) -> None:
    value = parse_override(f"key={text}").value
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("text", ["inf", "-inf", "INF"])
def test_infinities_are_floats(text: str) -> None:
    value = parse_override(f"x={text}").value
    assert isinstance(value, float) and math.isinf(value)
    assert (value < 0) == text.startswith("-")


def test_nan_is_a_float() -> None:
    value = parse_override("x=nan").value
    assert isinstance(value, float) and math.isnan(value)


@pytest.mark.parametrize(
    ("text", "why", "fix"),
    [
        ("seed", "it has no '='", "write seed=VALUE"),
        ("+seed", "it has no '='", "write +seed=VALUE"),
        ("=5", "the key is empty", "KEY=VALUE"),
        ("~", "the key is empty", "KEY=VALUE"),
        ("a..b=1", "is not a dotted path", "[n] for a list index"),
        ("a/b=1", "is not a dotted path", "letters, digits"),
        ("a[x]=1", "is not a dotted path", "letters, digits"),
        ("--lr=1", "is not a dotted path", "letters, digits"),
        ("~+seed", "'~' (delete) cannot be combined with '+'", "~key (delete)"),
        ("+~seed=1", "'~' (delete) cannot be combined with '+'", "~key (delete)"),
        ("+++seed=1", "'+++' is not a prefix", "++key=VALUE"),
        ("lr=1e-3,1e-4", "Hydra sweep", "lr=[1e-3,1e-4]"),
        ("x=[1, 2", "does not parse", "quotes"),
        ("x='a' b", "does not parse", "quotes"),
        ("x='a': 1", "more than one", "quote the whole value"),
        ("x=[!!int 3]", "YAML tag", "quote"),
        ("x={a: 1, a: 2}", "appears twice", "keep one"),
        ("x=\udcff", "not valid text", "UTF-8"),
    ],
)
def test_malformed_overrides_name_the_argument_and_the_fix(text: str, why: str, fix: str) -> None:
    error = parse_error(text)
    assert error.headline.startswith(f"Could not parse override {text!r}: ")
    assert why in error.headline
    assert error.hint is not None and fix in error.hint


def test_parse_overrides_reports_every_bad_argument_at_once() -> None:
    texts = ["seed=2", "seed", "=1", "a..b=1", "~+x", "lr=1,2", "ok=[1]"]
    with pytest.raises(ConfigError) as info:
        parse_overrides(texts)
    error = info.value
    assert error.headline == "5 override(s) could not be parsed"
    messages = [problem.message for problem in error.problems]
    for bad in ("'seed'", "'=1'", "'a..b=1'", "'~+x'", "'lr=1,2'"):
        assert sum(bad in message for message in messages) == 1, bad
    assert all(problem.hint for problem in error.problems)


# ---------------------------------------------------------------------------- applying


def test_set_replaces_an_existing_value() -> None:
    result = apply("training.learning_rate=3e-4", "model.name=big")
    assert result["training"]["learning_rate"] == 0.0003
    assert result["model"]["name"] == "big"
    assert result["training"]["epochs"] == 3


def test_set_may_replace_a_mapping_or_list_by_a_value_of_any_type() -> None:
    result = apply("training={lr: 1}", "training.lr=[1, 2]")
    assert result["training"] == {"lr": [1, 2]}


def test_add_creates_a_new_key_and_its_parents() -> None:
    result = apply("+training.warmup=100", "+callbacks.early_stop.patience=5")
    assert result["training"]["warmup"] == 100
    assert result["callbacks"] == {"early_stop": {"patience": 5}}


def test_force_sets_whether_or_not_the_key_exists() -> None:
    result = apply("++seed=7", "++a.b.c=x", "++model.layers[1].width=16")
    assert result["seed"] == 7
    assert result["a"] == {"b": {"c": "x"}}
    assert result["model"]["layers"][1] == {"width": 16}


def test_delete_removes_a_key_or_a_list_item() -> None:
    result = apply("~debug", "~training.betas[0]", "~model.layers.1.width")
    assert "debug" not in result
    assert result["training"]["betas"] == [0.99]
    assert result["model"]["layers"][1] == {}


def test_delete_with_a_value_checks_it_first() -> None:
    assert "seed" not in apply("~seed=1")
    assert "debug" not in apply("~debug=true")
    error = apply_error("~seed=2", "~debug=1", "~seed=1.0")
    assert len(error.problems) == 3  # True == 1 and 1 == 1.0 in Python, but not here
    assert error.problems[0].message == "Could not delete 'seed': its value is 1, not 2"
    assert error.problems[0].hint == "drop the value to delete it whatever it is: ~seed"


def test_list_items_by_bracket_or_dotted_index() -> None:
    result = apply("model.layers[0].width=128", "model.layers.1.width=8", "training.betas.1=0.5")
    assert result["model"]["layers"] == [{"width": 128}, {"width": 8}]
    assert result["training"]["betas"] == [0.9, 0.5]


def test_overrides_apply_in_order() -> None:
    result = apply("+extra=1", "extra=2", "~extra=2", "++extra=3")
    assert result["extra"] == 3


def test_unknown_key_is_an_error_with_a_suggestion() -> None:
    error = apply_error("training.learnig_rate=0.01")
    assert error.headline == "1 override(s) could not be applied to config"
    [problem] = error.problems
    assert problem.message == (
        "Could not override 'training.learnig_rate': no such key in config"
        " (did you mean 'training.learning_rate'?)"
    )
    assert problem.key == "training.learnig_rate"
    assert problem.hint == "to add it, use +training.learnig_rate=VALUE"


def test_unknown_parent_suggests_the_whole_path() -> None:
    [problem] = apply_error("trainin.epochs=1").problems
    assert "(did you mean 'training.epochs'?)" in problem.message


def test_what_names_the_config_in_messages() -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(CONFIG, [parse_override("nope=1")], what="stage_config.yaml")
    assert info.value.headline == "1 override(s) could not be applied to stage_config.yaml"
    assert "no such key in stage_config.yaml" in info.value.problems[0].message


def test_add_refuses_a_key_that_is_set() -> None:
    [problem] = apply_error("+seed=2").problems
    assert (
        problem.message
        == "Could not append to 'seed': it is already set; use seed=VALUE or ++seed=VALUE"
    )


def test_five_bad_overrides_are_reported_at_once() -> None:
    error = apply_error(
        "training.lr=1",  # no such key
        "+seed=2",  # already set
        "training.betas[5]=1",  # out of range
        "seed.value=1",  # through a number
        "~missing",  # nothing to delete
        "model.name=ok",  # fine, but nothing is applied
    )
    assert error.headline == "5 override(s) could not be applied to config"
    assert [problem.key for problem in error.problems] == [
        "training.lr",
        "seed",
        "training.betas[5]",
        "seed.value",
        "missing",
    ]
    messages = [problem.message for problem in error.problems]
    assert "index 5 is out of range for 'training.betas', a list of 2 item(s)" in messages[2]
    assert messages[3] == "Could not override 'seed.value': 'seed' is a number, not a mapping"
    assert messages[4] == "Could not delete 'missing': no such key in config"
    assert all(problem.hint for problem in error.problems)
    assert "training.lr" in error.render() and "fix:" in error.render()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model.name.x=1", "'model.name' is a string, not a mapping"),
        ("++debug.x=1", "'debug' is a boolean, not a mapping"),
        ("+training.betas.first=1", "'training.betas' is a list, and 'first' is not an index"),
        ("++training.betas[2]=1", "index 2 is out of range"),
        ("+training.betas[0]=1", "it is already set"),
        ("~model.layers[9]", "index 9 is out of range"),
    ],
)
def test_paths_through_values_and_lists(text: str, message: str) -> None:
    [problem] = apply_error(text).problems
    assert message in problem.message


def test_the_input_and_the_override_values_are_never_mutated() -> None:
    data = copy.deepcopy(CONFIG)
    overrides = parse_overrides(["+a.b=[1]", "~training.betas[0]", "model.layers[0].width=1"])
    result = apply_overrides(data, overrides)
    assert data == CONFIG
    result["a"]["b"].append(2)  # the same overrides applied again give the same result
    assert apply_overrides(data, overrides)["a"]["b"] == [1]
    with pytest.raises(ConfigError):
        apply_overrides(data, parse_overrides(["~debug", "nope=1"]))
    assert data == CONFIG


def test_no_overrides_give_an_equal_copy() -> None:
    result = apply_overrides(CONFIG, [])
    assert result == CONFIG and result is not CONFIG
    assert result["training"] is not CONFIG["training"]


# ---------------------------------------------------------------------------- naming


def dirname(*texts: str) -> str:
    return override_dirname(parse_overrides(texts))


def test_override_dirname_sorts_the_arguments() -> None:
    assert dirname() == ""
    assert dirname("seed=2", "training.epochs=5") == "seed=2,training.epochs=5"
    assert dirname("training.epochs=5", "seed=2") == "seed=2,training.epochs=5"
    assert dirname("~debug", "+extra=1", "++a=b") == "++a=b,+extra=1,~debug"


def test_override_dirname_replaces_unsafe_characters() -> None:
    assert dirname("model.name=a/b c", "x=[1, 2]") == "model.name=a_b_c,x=_1,_2_"
    assert dirname("path='../etc'") == "path=_.._etc_"
    assert "/" not in dirname("a.b[0]=/abs/path", "c={d: e}")


def test_override_dirname_is_capped_and_stays_distinct() -> None:
    first = dirname(*(f"key{i}=value{i}" for i in range(30)))
    second = dirname(*(f"key{i}=value{i}" for i in range(31)))
    assert len(first) == len(second) == MAX_DIRNAME
    assert first[:100] == second[:100] and first != second
    assert first == dirname(*(f"key{i}=value{i}" for i in reversed(range(30))))


# ---------------------------------------------------------------------------- property

NAMES = st.sampled_from(["a", "b", "c", "0", "1", "x-y", "_"])
SCALARS = st.none() | st.booleans() | st.integers(-5, 5) | st.floats() | st.text(max_size=5)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=3),
    max_leaves=8,
)
CONFIGS = st.dictionaries(NAMES, VALUES, max_size=4)
VALUE_TEXTS = (
    st.sampled_from(["1", "3e-4", "null", "true", "[1, {a: 2}]", "{a: [b]}", "'q'", "", "x,y"])
    | st.text(max_size=12)
    | st.text(st.characters(exclude_categories=()), max_size=6)  # surrogates too
)


@st.composite
def override_texts(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(["", "", "+", "++", "~", "+~", "~~"]))
    parts = draw(st.lists(NAMES | st.integers(0, 3), min_size=1, max_size=4))
    key = ""
    for part in parts:
        key += f"[{part}]" if isinstance(part, int) and key else f".{part}" if key else str(part)
    equals = draw(st.booleans()) if prefix == "~" else True
    return prefix + key + ("=" + draw(VALUE_TEXTS) if equals else "")


@settings(max_examples=300, deadline=None)
@given(CONFIGS, st.lists(override_texts() | st.text(max_size=20), max_size=4))
def test_overrides_either_apply_or_raise_config_error(
    data: dict[str, Any], texts: list[str]
) -> None:
    snapshot = copy.deepcopy(data)
    try:
        overrides = parse_overrides(texts)
        result = apply_overrides(data, overrides)
    except ConfigError as error:
        assert error.problems and all(problem.message for problem in error.problems)
        error.render()
    else:
        assert isinstance(result, dict)
        name = override_dirname(overrides)
        assert "/" not in name and len(name) <= MAX_DIRNAME
    assert repr(data) == repr(snapshot)  # repr: nan != nan, but prints the same


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(exclude_categories=()), max_size=30))
def test_any_text_parses_or_raises_config_error(text: str) -> None:
    try:
        override = parse_override(text)
    except ConfigError as error:
        assert error.headline.startswith("Could not parse override") and error.hint
    else:
        assert isinstance(override, Override) and override.path
