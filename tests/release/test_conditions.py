"""The stage-switch condition language: parse trees, precedence, evaluation, named
conditions, and syntax errors that point at the column and say how to fix them."""

from __future__ import annotations

from pathlib import Path

import pytest

from stagewise.errors import ConditionSyntaxError, ConfigError, StagewiseError
from stagewise.release.conditions import (
    MAX_DEPTH,
    MAX_LENGTH,
    BoolOp,
    Comparison,
    Const,
    Flag,
    Node,
    Not,
    compile_named,
    evaluate,
    flags,
    parse,
    tokenize,
)


def syntax_error(text: object) -> ConditionSyntaxError:
    with pytest.raises(ConditionSyntaxError) as info:
        parse(text)  # type: ignore[arg-type]
    return info.value


# ------------------------------------------------------------------ parse trees


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("epoch >= 50", Comparison("epoch", ">=", 50.0)),
        ("loss < 0.1", Comparison("loss", "<", 0.1)),
        ("0.5 < overall_accuracy", Comparison(0.5, "<", "overall_accuracy")),
        ("eval/loss <= 1e-3", Comparison("eval/loss", "<=", 0.001)),
        ("val.acc != .5", Comparison("val.acc", "!=", 0.5)),
        ("a == b", Comparison("a", "==", "b")),
        ("start", Flag("start")),
        ("pretraining_complete", Flag("pretraining_complete")),
        ("true", Const(True)),
        ("false", Const(False)),
        ("not converged", Not(Flag("converged"))),
        ("not not a", Not(Not(Flag("a")))),
        (
            "loss < 0.1 and epoch >= 50",
            BoolOp("and", (Comparison("loss", "<", 0.1), Comparison("epoch", ">=", 50.0))),
        ),
        ("a and b and c", BoolOp("and", (Flag("a"), Flag("b"), Flag("c")))),
        ("a or b or c", BoolOp("or", (Flag("a"), Flag("b"), Flag("c")))),
        ("  (( a ))  ", Flag("a")),
        ("epoch>=50", Comparison("epoch", ">=", 50.0)),
        ("a\n<\t1", Comparison("a", "<", 1.0)),
    ],
)
def test_exact_parse_trees(text: str, tree: Node) -> None:
    assert parse(text) == tree


def test_and_binds_tighter_than_or() -> None:
    assert parse("a or b and c") == BoolOp("or", (Flag("a"), BoolOp("and", (Flag("b"), Flag("c")))))
    assert parse("a and b or c") == BoolOp("or", (BoolOp("and", (Flag("a"), Flag("b"))), Flag("c")))
    assert parse("a < 1 or b > 2 and not c") == BoolOp(
        "or",
        (
            Comparison("a", "<", 1.0),
            BoolOp("and", (Comparison("b", ">", 2.0), Not(Flag("c")))),
        ),
    )


def test_not_binds_tighter_than_and() -> None:
    assert parse("not a and b") == BoolOp("and", (Not(Flag("a")), Flag("b")))
    assert parse("not a or b") == BoolOp("or", (Not(Flag("a")), Flag("b")))
    assert parse("not (a or b)") == Not(BoolOp("or", (Flag("a"), Flag("b"))))
    assert parse("not loss < 0.1") == Not(Comparison("loss", "<", 0.1))


def test_parentheses_override_precedence() -> None:
    assert parse("(a or b) and c") == BoolOp(
        "and", (BoolOp("or", (Flag("a"), Flag("b"))), Flag("c"))
    )
    assert parse("a and (b or c)") == BoolOp(
        "and", (Flag("a"), BoolOp("or", (Flag("b"), Flag("c"))))
    )


def test_tokens_carry_their_column() -> None:
    assert [(t.kind, t.text, t.column) for t in tokenize("  loss<0.1 and (x)")] == [
        ("name", "loss", 3),
        ("op", "<", 7),
        ("number", "0.1", 8),
        ("name", "and", 12),
        ("paren", "(", 16),
        ("name", "x", 17),
        ("paren", ")", 18),
    ]


def test_flags_lists_named_conditions_only() -> None:
    assert flags(parse("converged and loss < 0.1 or not (ready and epoch >= 5)")) == {
        "converged",
        "ready",
    }
    assert flags(parse("loss < 0.1")) == set()


# ------------------------------------------------------------------ evaluation


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("epoch >= 50", {"epoch": 50}, True),
        ("epoch >= 50", {"epoch": 49}, False),
        ("loss < 0.1 and epoch >= 50", {"loss": 0.05, "epoch": 60}, True),
        ("loss < 0.1 and epoch >= 50", {"loss": 0.5, "epoch": 60}, False),
        ("loss < 0.1 or epoch >= 50", {"loss": 0.5, "epoch": 60}, True),
        ("loss < 0.1 or epoch >= 50", {"loss": 0.5, "epoch": 10}, False),
        ("not loss < 0.1", {"loss": 0.5}, True),
        ("a == 3", {"a": 3}, True),
        ("a != 3", {"a": 3.0}, False),
        ("0.9 <= acc", {"acc": 0.95}, True),
        ("loss < best", {"loss": 0.1, "best": 0.2}, True),
        ("eval/loss < 1", {"eval/loss": 0.5}, True),
        ("true", {}, True),
        ("false", {}, False),
        ("false or true", {}, True),
        ("not true", {}, False),
    ],
)
def test_evaluation(text: str, values: dict[str, object], expected: bool) -> None:
    assert evaluate(parse(text), values) is expected


@pytest.mark.parametrize(
    "text", ["loss < 0.1", "loss >= 0", "loss == loss", "loss != 1", "0 <= loss", "a < b"]
)
def test_a_comparison_with_a_missing_metric_is_false(text: str) -> None:
    assert evaluate(parse(text), {"epoch": 100, "b": 1}) is False


def test_a_missing_metric_under_not_is_true() -> None:
    # 'not' flips the false comparison: write the positive form to wait for the metric
    assert evaluate(parse("not loss < 0.1"), {}) is True


@pytest.mark.parametrize("value", [None, "0.05", True, False, [0.05], {"v": 0.05}])
def test_a_metric_that_is_not_a_number_makes_the_comparison_false(value: object) -> None:
    assert evaluate(parse("loss < 0.1"), {"loss": value}) is False
    assert evaluate(parse("loss >= 0.1"), {"loss": value}) is False


def test_a_name_on_its_own() -> None:
    assert evaluate(parse("converged"), {"converged": True}) is True
    assert evaluate(parse("converged"), {"converged": 0}) is False
    # a label that is neither defined nor observed always holds (seed 000 pairs it with an epoch)
    assert evaluate(parse("pretraining_complete"), {}) is True
    assert evaluate(parse("start"), {}) is True


def test_named_conditions_from_a_table() -> None:
    named = compile_named(
        {
            "converged": "loss < 0.05",
            "pretraining_complete": "converged and epoch >= 50",
            "plateau": "not converged and epoch >= 200",
        }
    )
    assert named["converged"] == Comparison("loss", "<", 0.05)
    node = parse("pretraining_complete or plateau")
    assert evaluate(node, {"loss": 0.01, "epoch": 50}, named) is True
    assert evaluate(node, {"loss": 0.01, "epoch": 49}, named) is False
    assert evaluate(node, {"loss": 0.5, "epoch": 100}, named) is False
    assert evaluate(node, {"loss": 0.5, "epoch": 200}, named) is True
    assert evaluate(node, {"epoch": 500}, named) is True  # no loss: not converged
    # a named condition wins over a metric of the same name
    assert evaluate(parse("converged"), {"converged": True, "loss": 1.0}, named) is False


def test_shared_references_are_not_a_cycle() -> None:
    named = compile_named(
        {"a": "b and c", "b": "d", "c": "d or x > 1", "d": "epoch >= 5", "e": "a and a"}
    )
    assert evaluate(parse("e"), {"epoch": 5}, named) is True
    assert evaluate(parse("e"), {"epoch": 4}, named) is False


@pytest.mark.parametrize(
    ("table", "cycle"),
    [
        ({"a": "b", "b": "a"}, "a -> b -> a"),
        ({"a": "a"}, "a -> a"),
        ({"a": "not a or epoch > 3"}, "a -> a"),
        ({"a": "b and epoch > 1", "b": "c", "c": "loss < 1 or a"}, "a -> b -> c -> a"),
        ({"x": "epoch > 1", "a": "x and b", "b": "(a)"}, "a -> b -> a"),
    ],
)
def test_named_conditions_in_a_cycle_are_refused(table: dict[str, str], cycle: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_named(table)
    error = info.value
    assert "cycle" in error.headline
    assert cycle in error.headline
    assert error.location is not None and error.location.startswith("conditions.")
    assert error.hint


def test_a_bad_named_condition_names_its_key() -> None:
    with pytest.raises(ConditionSyntaxError) as info:
        compile_named({"ok": "epoch > 1", "converged": "loss = 0.05"})
    assert info.value.location == "conditions.converged"
    assert "column 6" in info.value.headline
    assert info.value.hint and "==" in info.value.hint


# ------------------------------------------------------------------ syntax errors


@pytest.mark.parametrize(
    ("text", "column", "hint"),
    [
        ("a = 3", 3, "=="),
        ("epoch >= 50 and loss = 0.1", 22, "=="),
        ("a && b", 3, "and"),
        ("a || b", 3, "or"),
        ("!a", 1, "not"),
        ("a < b < c", 7, "a < b and b < c"),
        ("1 < epoch <= 5", 11, "and"),
        ("a b", 3, "and"),
        ("a)", 2, None),
        ("(a", 3, None),
        ("((a) or b", 10, None),
        ("a <", 4, None),
        ("a and", 6, None),
        ("and a", 1, None),
        ("a < and", 5, None),
        ("50", 1, "epoch >= 50"),
        ("()", 2, None),
        ("a ; b", 3, None),
        ("é > 1", 1, None),
    ],
)
def test_syntax_errors_point_at_the_column(text: str, column: int, hint: str | None) -> None:
    error = syntax_error(text)
    assert f"at column {column} of {text!r}" in error.headline
    assert error.hint  # every syntax error says how to fix it
    if hint is not None:
        assert hint in error.hint


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text(text: str) -> None:
    error = syntax_error(text)
    assert "empty" in error.headline
    assert error.hint and "epoch >= 50" in error.hint


def test_text_that_is_too_long() -> None:
    text = " or ".join(["loss < 0.1"] * 200)
    assert len(text) > MAX_LENGTH
    error = syntax_error(text)
    assert str(MAX_LENGTH) in error.headline
    assert error.hint
    assert parse(" or ".join(["loss < 0.1"] * 100))  # under the limit it parses


@pytest.mark.parametrize(
    "make", [lambda n: "(" * n + "a" + ")" * n, lambda n: "not " * n + "a"], ids=["parens", "not"]
)
def test_nesting_that_is_too_deep(make) -> None:  # type: ignore[no-untyped-def]
    assert parse(make(MAX_DEPTH - 1)) is not None
    error = syntax_error(make(MAX_DEPTH + 10))
    assert f"more than {MAX_DEPTH}" in error.headline
    assert error.hint


@pytest.mark.parametrize("value", [None, 3, 0.5, ["a"], b"epoch > 1"])
def test_a_condition_must_be_text(value: object) -> None:
    error = syntax_error(value)
    assert "must be text" in error.headline
    assert error.hint


def test_syntax_errors_are_config_errors() -> None:
    error = syntax_error("a = 1")
    assert isinstance(error, ConfigError) and isinstance(error, StagewiseError)


# ------------------------------------------------------------------ no code runs


INJECTIONS = [
    "__import__('os').system('touch CANARY')",
    '__import__("os").system("touch CANARY")',
    "os.system('touch CANARY')",
    "eval(\"__import__('os').system('touch CANARY')\")",
    "exec(\"open('CANARY', 'w')\")",
    "open('CANARY', 'w').write('x')",
    "epoch > 1 and __import__('os').system('touch CANARY')",
    "epoch > 1; import os; os.system('touch CANARY')",
    "`touch CANARY`",
    "$(touch CANARY)",
    "epoch > 1 | touch CANARY",
    "lambda: open('CANARY', 'w')",
    "[c for c in ().__class__.__bases__]",
    "loss[0] < 1",
    "{{ config.__class__ }}",
    "a < 1 if True else b",
    "loss < 0.1 # comment",
    "epoch >= 5 and (lambda x: x)(1)",
]


@pytest.mark.parametrize("text", INJECTIONS)
def test_injection_attempts_are_parse_errors(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    error = syntax_error(text)
    assert "column" in error.headline
    with pytest.raises(ConditionSyntaxError):
        compile_named({"sneaky": text})
    assert not (tmp_path / "CANARY").exists()


def test_dunder_names_are_only_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a dotted name is a metric key (like 'eval/loss'), looked up in a dict, never an attribute
    monkeypatch.chdir(tmp_path)
    node = parse("__class__.__init__.__globals__ > 0")
    assert node == Comparison("__class__.__init__.__globals__", ">", 0.0)
    assert evaluate(node, {}) is False
    assert evaluate(parse("__builtins__"), {}) is True  # an unknown label
    assert not (tmp_path / "CANARY").exists()
