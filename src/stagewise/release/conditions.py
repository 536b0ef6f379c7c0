"""The stage-switch condition language, parsed without ``eval``.

Grammar (``or`` binds loosest)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" expr ")" | comparison | NAME | "true" | "false"
    comparison := operand ("<" | "<=" | ">" | ">=" | "==" | "!=") operand
    operand    := NUMBER | NAME

In a comparison a NAME is a variable: ``epoch`` or an observed metric (``loss``,
``overall_accuracy``, ``eval/loss``). A comparison whose variable has not been observed
is false. A NAME on its own is a *named condition*: one defined under ``conditions:`` in
stage_config.yaml, else an observed metric's truth value, else ``start`` (always true) or
a label such as ``pretraining_complete``, which holds in an entry that also has an epoch
(seed 000 pairs such labels with one) and is false on its own.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from stagewise.errors import ConditionSyntaxError, ConfigError

MAX_LENGTH = 2000
BUILTIN_LABELS = frozenset({"start"})
MAX_DEPTH = 50

_TOKEN = re.compile(
    r"\s*(?:(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<op><=|>=|==|!=|<|>)"
    r"|(?P<paren>[()])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_./]*))"
)
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_KEYWORDS = {"and", "or", "not", "true", "false"}


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    column: int


# ------------------------------------------------------------------ the syntax tree


@dataclass(frozen=True)
class Const:
    value: bool


@dataclass(frozen=True)
class Comparison:
    left: str | float
    op: str
    right: str | float


@dataclass(frozen=True)
class Flag:
    name: str


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    operands: tuple[Node, ...]


Node = Const | Comparison | Flag | Not | BoolOp


# ------------------------------------------------------------------ parsing


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    stripped_end = len(text.rstrip())
    while position < stripped_end:
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            column = len(text) - len(text[position:].lstrip()) + 1
            char = text[column - 1] if column - 1 < len(text) else ""
            hint = "use '==' to compare" if char == "=" else None
            hint = hint or ("use 'and', 'or', 'not'" if char in "&|!" else None)
            raise _syntax_error(text, column, f"unexpected character {char!r}", hint)
        kind = match.lastgroup or ""
        tokens.append(Token(kind, match.group(kind), match.start(kind) + 1))
        position = match.end()
    return tokens


def parse(text: str) -> Node:
    """Parse a condition; a :class:`ConditionSyntaxError` points at the column."""
    if not isinstance(text, str):
        raise ConditionSyntaxError(
            f"a condition must be text, found {text!r}", hint="quote it, e.g. 'epoch >= 50'"
        )
    if len(text) > MAX_LENGTH:
        raise ConditionSyntaxError(
            f"a condition may be at most {MAX_LENGTH} characters long",
            hint="define parts of it under 'conditions:' and refer to them by name",
        )
    if not text.strip():
        raise ConditionSyntaxError("the condition is empty", hint="write e.g. 'epoch >= 50'")
    return _Parser(text, tokenize(text)).parse()


class _Parser:
    def __init__(self, text: str, tokens: list[Token]) -> None:
        self.text, self.tokens, self.index, self.depth = text, tokens, 0, 0

    def peek(self) -> Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise _syntax_error(self.text, len(self.text) + 1, "the condition ends too early")
        self.index += 1
        return token

    def parse(self) -> Node:
        node = self.expr()
        token = self.peek()
        if token is not None:
            raise _syntax_error(
                self.text,
                token.column,
                f"unexpected {token.text!r}",
                "join conditions with 'and' or 'or'",
            )
        return node

    def expr(self) -> Node:
        return self.bool_op("or", self.and_expr)

    def and_expr(self) -> Node:
        return self.bool_op("and", self.not_expr)

    def bool_op(self, word: str, operand: Callable[[], Node]) -> Node:
        operands = [operand()]
        while (token := self.peek()) is not None and token.text == word:
            self.take()
            operands.append(operand())
        return operands[0] if len(operands) == 1 else BoolOp(word, tuple(operands))

    def not_expr(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ConditionSyntaxError(
                f"the condition nests more than {MAX_DEPTH} levels",
                hint="remove redundant parentheses and 'not's, or split it under 'conditions:'",
            )
        try:
            token = self.take()
            if token.text == "not":
                return Not(self.not_expr())
            if token.text == "(":
                node = self.expr()
                closing = self.peek()
                if closing is None or closing.text != ")":
                    column = closing.column if closing else len(self.text) + 1
                    raise _syntax_error(self.text, column, "a '(' is not closed")
                self.take()
                return node
            if token.text in ("true", "false"):
                return Const(token.text == "true")
            if token.kind in ("number", "name") and token.text not in _KEYWORDS:
                following = self.peek()
                if following is not None and following.kind == "op":
                    return self.comparison(token)
                if token.kind == "name":
                    return Flag(token.text)
                raise _syntax_error(
                    self.text,
                    token.column,
                    "a number needs a comparison",
                    f"e.g. 'epoch >= {token.text}'",
                )
            raise _syntax_error(self.text, token.column, f"unexpected {token.text!r}")
        finally:
            self.depth -= 1

    def comparison(self, left: Token) -> Node:
        op = self.take()
        right = self.take()
        if right.kind not in ("number", "name") or right.text in _KEYWORDS:
            raise _syntax_error(
                self.text, right.column, f"expected a number or a name after {op.text!r}"
            )
        following = self.peek()
        if following is not None and following.kind == "op":
            raise _syntax_error(
                self.text,
                following.column,
                "comparisons cannot be chained",
                "write 'a < b and b < c'",
            )
        return Comparison(_operand(left), op.text, _operand(right))


def _operand(token: Token) -> str | float:
    return float(token.text) if token.kind == "number" else token.text


def _syntax_error(
    text: str, column: int, message: str, hint: str | None = None
) -> ConditionSyntaxError:
    return ConditionSyntaxError(
        f"{message} at column {column} of {text!r}", hint=hint or "see docs/concepts/stages.md"
    )


# ------------------------------------------------------------------ evaluation


def evaluate(
    node: Node,
    values: Mapping[str, object],
    named: Mapping[str, Node] | None = None,
    *,
    labels_hold: bool = True,
) -> bool:
    """Evaluate a parsed condition against ``epoch`` and metric values. A label (a name
    neither defined nor reported) holds if ``labels_hold``: the controller sets it only for
    entries that also have an epoch, so a label alone never triggers a switch."""
    named = named or {}
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Comparison):
        left, right = _value(node.left, values), _value(node.right, values)
        return left is not None and right is not None and _OPS[node.op](left, right)
    if isinstance(node, Flag):
        if node.name in named:
            return evaluate(named[node.name], values, named, labels_hold=labels_hold)
        if node.name in values:
            return bool(values[node.name])
        return labels_hold or node.name in BUILTIN_LABELS  # 'start' always holds
    if isinstance(node, Not):
        return not evaluate(node.operand, values, named, labels_hold=labels_hold)
    results = (evaluate(child, values, named, labels_hold=labels_hold) for child in node.operands)
    return all(results) if node.op == "and" else any(results)


def _value(operand: str | float, values: Mapping[str, object]) -> float | None:
    if isinstance(operand, float):
        return operand
    value = values.get(operand)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def flags(node: Node) -> set[str]:
    """The named conditions a condition refers to."""
    if isinstance(node, Flag):
        return {node.name}
    if isinstance(node, Not):
        return flags(node.operand)
    if isinstance(node, BoolOp):
        return set().union(*(flags(child) for child in node.operands))
    return set()


def compile_named(definitions: Mapping[str, str]) -> dict[str, Node]:
    """Parse the ``conditions:`` table and refuse cycles (``a: b``, ``b: a``)."""
    parsed: dict[str, Node] = {}
    for name, text in definitions.items():
        try:
            parsed[name] = parse(text)
        except ConditionSyntaxError as exc:
            raise ConditionSyntaxError(
                exc.headline, location=f"conditions.{name}", hint=exc.hint
            ) from None
    for start in parsed:
        _check_cycle(start, parsed, [start])
    return parsed


def _check_cycle(name: str, parsed: Mapping[str, Node], trail: list[str]) -> None:
    for ref in sorted(flags(parsed[name])):
        if ref not in parsed:
            continue
        if ref in trail:
            cycle = " -> ".join([*trail[trail.index(ref) :], ref])
            raise ConfigError(
                f"named conditions refer to each other in a cycle: {cycle}",
                location=f"conditions.{trail[0]}",
                hint="define one of them without referring back",
            )
        _check_cycle(ref, parsed, [*trail, ref])
