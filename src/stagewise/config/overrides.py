"""Command-line overrides in Hydra's grammar, applied to a plain nested config.

Each argument is one override:

    key=value      set a key that exists (a misspelt key is an error, not a new key)
    +key=value     add a key that does not exist yet, creating missing parent mappings
    ++key=value    set a key whether or not it exists, creating missing parent mappings
    ~key           delete a key that exists
    ~key=value     delete it only if its current value equals ``value``

A key is a dotted path of names made of letters, digits, ``_`` and ``-``; ``[n]`` or
``.n`` indexes a list, so ``optimizer.betas[0]`` and ``optimizer.betas.0`` are the same
key. An index must be in range: a list has no free slots to add to, so set the whole
list instead (``key=[1, 2, 3]``).

A value is read as Hydra reads it, which is not how YAML 1.1 would read it:

    10  -3  1_000                  int
    3e-4  1e5  .5  1.  inf  nan    float (YAML 1.1 reads ``3e-4`` as a string)
    true  False                    bool (only these words: ``yes`` and ``on`` are strings)
    null  NULL                     None
    'text'  "text"                 a string, with YAML's quoting and escapes
    [1, 2]  {a: 1}                 a list or mapping, whose items follow these same rules
    (nothing, as in ``key=``)      the empty string
    anything else                  the string as written: ``0x10``, ``007``, ``1:30``, ``~``

A comma outside brackets and quotes is Hydra's sweep (``lr=1e-3,1e-4``); stagewise takes
one value per key, so that is an error: quote the value or write a list.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from stagewise.config.base import suggest
from stagewise.config.loading import KeyPath, format_key, parse_yaml
from stagewise.errors import ConfigError, Problem

MAX_DIRNAME = 120

OverrideKind = Literal["set", "add", "force", "delete"]
_KINDS: dict[str, OverrideKind] = {"": "set", "+": "add", "++": "force", "~": "delete"}
_VERBS = {"set": "override", "add": "append to", "force": "set", "delete": "delete"}
_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+|\[[0-9]+\])*")
_SEGMENT = re.compile(r"\[([0-9]+)\]|([^.\[\]]+)")
_DIGITS = r"[0-9](?:_?[0-9])*"
_INT = re.compile(r"[+-]?(?:0|[1-9](?:_?[0-9])*)")
_FLOAT = re.compile(
    rf"[+-]?(?:(?:(?:{_DIGITS})?\.{_DIGITS}|{_DIGITS}\.)(?:[eE][+-]?{_DIGITS})?"
    rf"|{_DIGITS}[eE][+-]?{_DIGITS}|inf|nan)",
    re.IGNORECASE,
)
_WORDS = {"true": True, "false": False, "null": None}
# Tags would let a value pick its own constructor; block syntax means text after the value.
_REFUSED_TOKENS = (yaml.TagToken, yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken)
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+~-]")


@dataclass(frozen=True)
class Override:
    """One parsed override argument."""

    kind: OverrideKind
    path: KeyPath  # ``[n]`` gives an int; ``.n`` a str that indexes only where a list is
    value: Any
    text: str

    @property
    def has_value(self) -> bool:
        """Whether a delete names the value it expects (``~key=null`` vs ``~key``)."""
        return self.kind != "delete" or "=" in self.text


class _Failed(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem


# ---------------------------------------------------------------------------- parsing


def _malformed(text: str, why: str, hint: str) -> ConfigError:
    return ConfigError(f"Could not parse override {text!r}: {why}", hint=hint)


def parse_override(text: str) -> Override:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _malformed(text, "it is not valid text", "retype the argument as UTF-8") from None
    body = text.strip()
    key_text, eq, value_text = body.lstrip("+~").partition("=")
    prefix, key_text = body[: len(body) - len(body.lstrip("+~"))], key_text.strip()
    kind = _KINDS.get(prefix)
    if kind is None:
        why = "'~' (delete) cannot be combined with '+' (add)" if "~" in prefix else ""
        raise _malformed(
            text,
            why or f"{prefix!r} is not a prefix",
            "use key=VALUE, +key=VALUE (add), ++key=VALUE (add or replace) or ~key (delete)",
        )
    if not key_text:
        raise _malformed(text, "the key is empty", "write KEY=VALUE, e.g. training.lr=3e-4")
    if not _KEY.fullmatch(key_text):
        raise _malformed(
            text,
            f"the key {key_text!r} is not a dotted path of names",
            "use letters, digits, '_' and '-' joined by '.', and [n] for a list index: a.b[0].c",
        )
    if not eq and kind != "delete":
        raise _malformed(text, "it has no '='", f"write {prefix}{key_text}=VALUE")
    path = tuple(int(i) if i else name for i, name in _SEGMENT.findall(key_text))
    value = _parse_value(value_text.strip(), text, key_text) if eq else None
    return Override(kind=kind, path=path, value=value, text=text)


def parse_overrides(texts: Sequence[str]) -> list[Override]:
    overrides: list[Override] = []
    problems: list[Problem] = []
    for text in texts:
        try:
            overrides.append(parse_override(text))
        except ConfigError as exc:
            problems.append(Problem(message=exc.headline, hint=exc.hint))
    if problems:
        raise ConfigError(
            f"{len(problems)} override(s) could not be parsed",
            problems=problems,
            hint="write each as key=VALUE, +key=VALUE, ++key=VALUE, ~key or ~key=VALUE",
        )
    return overrides


def _parse_value(raw: str, text: str, key: str) -> Any:
    try:
        if raw[:1] in ("[", "{", "'", '"'):
            return _parse_yaml_value(raw, text)
        if "," in raw:
            raise _malformed(
                text,
                "a comma outside brackets is a Hydra sweep; stagewise takes one value per key",
                f"quote the value ({key}='{raw}') or write a list ({key}=[{raw}])",
            )
        return _scalar(raw)
    except ValueError as exc:  # int() or str() of a number with more than 4300 digits
        raise _malformed(text, str(exc), "write a shorter number, or quote it") from None


def _scalar(raw: str) -> Any:
    """Hydra's reading of an unquoted value."""
    if _INT.fullmatch(raw):
        return int(raw)
    if _FLOAT.fullmatch(raw):
        return float(raw)
    return _WORDS.get(raw.lower(), raw)


def _parse_yaml_value(raw: str, text: str) -> Any:
    """A quoted string or flow collection. Its plain scalars are resolved by :func:`_scalar`
    and written back in a form YAML 1.1 reads as that value, so that ``[3e-4]`` is a float
    inside a list as it is alone; the project's safe loader then builds the result."""
    try:
        tokens = list(yaml.scan(raw, Loader=yaml.SafeLoader))  # Python marks: char indices
    except yaml.YAMLError as exc:
        why = getattr(exc, "problem", None) or str(exc)
        raise _malformed(
            text, f"the value does not parse: {why}", "check brackets, commas and quotes"
        ) from None
    if any(isinstance(token, _REFUSED_TOKENS) for token in tokens):
        raise _malformed(
            text,
            "the value is more than one quoted string, list or mapping, or has a YAML tag",
            "quote the whole value to keep it a string",
        )
    pieces, done, previous = [], 0, None
    for token in tokens:
        # Mapping keys stay as written: the loader makes every key a string anyway.
        plain = isinstance(token, yaml.ScalarToken) and token.plain
        if plain and not isinstance(previous, yaml.KeyToken):
            pieces += [raw[done : token.start_mark.index], _yaml_text(_scalar(token.value))]
            done = token.end_mark.index
        previous = token
    try:
        return parse_yaml("".join(pieces) + raw[done:], f"<override {text}>").data
    except ConfigError as exc:
        raise _malformed(text, exc.headline, exc.hint or "check the value") from None


def _yaml_text(value: Any) -> str:
    """``value`` written so that YAML 1.1 reads back exactly that value."""
    if isinstance(value, str):
        escaped = (c if c.isprintable() and c not in '"\\' else f"\\U{ord(c):08x}" for c in value)
        return '"' + "".join(escaped) + '"'
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return ".nan" if math.isnan(value) else ("-.inf" if value < 0 else ".inf")
        text = repr(value)  # YAML 1.1 floats need a '.': 1e-05 -> 1.0e-05
        return text if "." in text or "e" not in text else text.replace("e", ".0e")
    return json.dumps(value)  # int, bool or None


# ---------------------------------------------------------------------------- applying


def apply_overrides(
    data: dict[str, Any],
    overrides: Sequence[Override],
    *,
    what: str = "config",
    declared: Callable[[KeyPath], bool] | None = None,
) -> dict[str, Any]:
    """A copy of ``data`` with ``overrides`` applied in order; ``data`` is left as it was.

    ``declared(path)`` says whether the schema has a key there: like Hydra over a
    structured config, ``KEY=VALUE`` then sets a key that has a default but is not written
    in the file (without ``declared``, only keys in the file can be set without ``+``)."""
    result = copy.deepcopy(data)
    problems: list[Problem] = []
    for override in overrides:
        if declared is not None and override.kind == "set" and declared(override.path):
            override = dataclasses.replace(override, kind="force")
        try:
            _apply(result, override, what)
        except _Failed as failed:
            problems.append(failed.problem)
    if problems:
        raise ConfigError(
            f"{len(problems)} override(s) could not be applied to {what}",
            problems=problems,
            hint="fix or drop each override listed; nothing was applied",
        )
    return result


def _apply(root: dict[str, Any], o: Override, what: str) -> None:
    if not o.path:
        raise _fail(o, "the key is empty", "write KEY=VALUE")
    node: Any = root
    for depth in range(len(o.path)):
        key = _key_in(node, o, depth)
        exists = not isinstance(node, dict) or key in node  # list indices are range-checked
        if depth < len(o.path) - 1:
            if not exists and o.kind in ("add", "force"):
                node[key] = {}
            elif not exists:
                raise _missing(node, o, depth, what)
            node = node[key]
        elif o.kind == "add" and exists:
            k = format_key(o.path)
            why = f"it is already set; use {k}=VALUE or ++{k}=VALUE"
            raise _fail(o, why, f"{k}=VALUE replaces it; ++{k}=VALUE sets it either way")
        elif o.kind in ("set", "delete") and not exists:
            raise _missing(node, o, depth, what)
        elif o.kind == "delete":
            if o.has_value and not _same(node[key], o.value):
                hint = f"drop the value to delete it whatever it is: ~{format_key(o.path)}"
                raise _fail(o, f"its value is {node[key]!r}, not {o.value!r}", hint)
            del node[key]
        else:
            node[key] = copy.deepcopy(o.value)  # the same Override may be applied again


def _key_in(node: Any, o: Override, depth: int) -> str | int:
    """``o.path[depth]`` as a key of ``node``: a string for a mapping, an index for a list."""
    part, here = o.path[depth], format_key(o.path[:depth])
    if isinstance(node, dict):
        return str(part)
    if not isinstance(node, list):
        raise _fail(o, f"{here!r} is {_kind_of(node)}, not a mapping", f"set {here} itself")
    if not isinstance(part, int) and not re.fullmatch("[0-9]+", str(part)):
        raise _fail(o, f"{here!r} is a list, and {part!r} is not an index", f"use {here}[0]")
    index = int(part)
    if index >= len(node):
        raise _fail(
            o,
            f"index {index} is out of range for {here!r}, a list of {len(node)} item(s)",
            f"indices start at 0; to change the length, set the whole list: {here}=[...]",
        )
    return index


def _missing(node: dict[str, Any], o: Override, depth: int, what: str) -> _Failed:
    key_text = format_key(o.path)
    guess = suggest(str(o.path[depth]), [str(key) for key in node])
    why = f"no such key in {what}"
    if guess is not None:
        why += f" (did you mean {format_key((*o.path[:depth], guess, *o.path[depth + 1 :]))!r}?)"
    if o.kind == "delete":
        return _fail(o, why, "there is nothing to delete; drop the override or fix the key")
    return _fail(o, why, f"to add it, use +{key_text}=VALUE")


def _fail(o: Override, why: str, hint: str) -> _Failed:
    key_text = format_key(o.path)
    message = f"Could not {_VERBS[o.kind]} {key_text!r}: {why}"
    return _Failed(Problem(message=message, key=key_text, hint=hint))


def _kind_of(value: Any) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), "a string" if isinstance(value, str) else "a value")


def _same(current: Any, expected: Any) -> bool:
    # Python has True == 1 == 1.0; a guarded delete should not treat those as the same.
    return type(current) is type(expected) and current == expected


# ---------------------------------------------------------------------------- naming


def override_dirname(overrides: Sequence[Override]) -> str:
    """Hydra's ``override_dirname``: the sorted arguments joined by ``,``, made safe as one
    directory name (no ``/``), and cut to :data:`MAX_DIRNAME` characters with a short hash
    of the whole so that long, different override sets stay different."""
    joined = ",".join(sorted(o.text.strip() for o in overrides))
    name = _UNSAFE.sub("_", joined)
    if len(name) > MAX_DIRNAME:
        digest = hashlib.sha1(joined.encode("utf-8", "surrogatepass"), usedforsecurity=False)
        name = f"{name[: MAX_DIRNAME - 9]}-{digest.hexdigest()[:8]}"
    return name
