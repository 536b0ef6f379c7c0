"""Safe parsing of YAML and JSON documents, keeping the line of every key.

Only plain data is read: YAML tags that build Python objects are refused, aliases may not
expand past a bound (no "billion laughs"), duplicate keys are errors in both formats, and
every key path maps to the line where it was written, so that any later error (a wrong
type, an unknown stage) can name ``file:line``.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from json.decoder import scanstring  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any

import yaml

from stagewise.errors import ConfigError, StagewiseError

KeyPath = tuple[str | int, ...]

MAX_NODES = 200_000
MAX_DEPTH = 100

_PLAIN_TAGS = {
    "tag:yaml.org,2002:" + name
    for name in ("str", "int", "float", "bool", "null", "timestamp", "map", "seq", "merge")
}
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SafeDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def format_key(path: KeyPath) -> str:
    """``("dataset_index", 0, "name")`` -> ``dataset_index[0].name``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


@dataclass
class Document:
    """Parsed data plus the line of each key path, for error messages."""

    data: Any
    source: str
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)


def parse_document(text: str | bytes, source: str) -> Document:
    """Parse YAML or JSON by the file's suffix (``.json`` is JSON, anything else YAML)."""
    if isinstance(text, bytes):
        text = decode_text(text, source)
    text = text.removeprefix("\ufeff")
    if source.lower().endswith(".json"):
        return parse_json(text, source)
    return parse_yaml(text, source)


def read_document(
    path: str | os.PathLike[str], what: str, error: type[StagewiseError] = ConfigError
) -> Document:
    """Read and parse the file at ``path``; a file that cannot be read is ``error``,
    naming ``what`` it was meant to be."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise error(
            f"cannot read the {what}: {exc.strerror or exc}",
            location=source,
            hint="check the path",
        ) from None
    return parse_document(raw, source)


def decode_text(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"the file is not valid UTF-8 (byte {exc.start} cannot be decoded)",
            location=f"{source}:{line}",
            hint="save the file as UTF-8",
        ) from None


# ---------------------------------------------------------------------------- YAML


def parse_yaml(text: str, source: str) -> Document:
    try:
        _check_yaml_depth(text, source)  # before compose: libyaml's composer recurses in C
        node = yaml.compose(text, Loader=_SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        if "maximum nesting depth" in problem:  # PyYAML >= 6.0.3 stops deep flow nesting itself
            raise ConfigError(
                f"the YAML is nested more than {MAX_DEPTH} levels deep",
                location=f"{source}{line}",
                hint="stagewise files need only a few levels; flatten the structure",
            ) from None
        raise ConfigError(
            f"the YAML does not parse: {problem}",
            location=f"{source}{line}",
            hint="check indentation, colons and quotes around that line",
        ) from None
    except yaml.YAMLError as exc:
        position = getattr(exc, "position", None)  # a ReaderError: a character not allowed
        line = f":{text[:position].count(chr(10)) + 1}" if isinstance(position, int) else ""
        raise ConfigError(
            f"the YAML does not parse: {exc}",
            location=f"{source}{line}",
            hint="remove control characters and save the file as UTF-8 text",
        ) from None
    except RecursionError:
        raise ConfigError(
            f"the YAML is nested too deeply (more than {MAX_DEPTH} levels)",
            location=source,
            hint="stagewise files need only a few levels; flatten the structure",
        ) from None
    doc = Document(data=None, source=source)
    if node is not None:
        doc.data = _YamlBuilder(doc).build(node, (), 0, frozenset())
    return doc


def _check_yaml_depth(text: str, source: str) -> None:
    """Refuse deep nesting from the (iterative) event stream: composing ~30,000 nested
    levels overflows the C stack and kills the process instead of raising."""
    depth = 0
    for event in yaml.parse(text, Loader=_SafeLoader):
        if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            depth += 1
            if depth > MAX_DEPTH + 1:
                raise ConfigError(
                    f"the YAML is nested more than {MAX_DEPTH} levels deep",
                    location=f"{source}:{event.start_mark.line + 1}",
                    hint="stagewise files need only a few levels; flatten the structure",
                )
        elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
            depth -= 1


class _YamlBuilder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.count = 0
        self.scalars = yaml.constructor.SafeConstructor()

    def fail(self, message: str, node: yaml.Node, hint: str | None = None) -> ConfigError:
        return ConfigError(
            message, location=f"{self.doc.source}:{node.start_mark.line + 1}", hint=hint
        )

    def build(self, node: yaml.Node, path: KeyPath, depth: int, stack: frozenset[int]) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.fail(
                f"the YAML expands to more than {MAX_NODES} values (aliases repeated too often)",
                node,
                hint="write the values out, or use fewer nested aliases",
            )
        if depth > MAX_DEPTH:
            raise self.fail(
                f"the YAML is nested more than {MAX_DEPTH} levels deep",
                node,
                hint="stagewise files need only a few levels; flatten the structure",
            )
        if node.tag not in _PLAIN_TAGS:
            raise self.fail(
                f"the YAML tag {node.tag!r} is not allowed",
                node,
                hint="stagewise reads plain data only; remove the tag",
            )
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            if node.tag.endswith(":timestamp"):
                return node.value  # dates stay as written; formats take them as strings
            try:
                return self.scalars.construct_object(node)
            except (ValueError, KeyError, yaml.YAMLError):  # e.g. "!!int abc"
                tag = node.tag.rsplit(":", 1)[-1]
                raise self.fail(
                    f"{node.value!r} is not a valid {tag}",
                    node,
                    hint=f"remove the !!{tag} tag or write a valid {tag}",
                ) from None
        if id(node) in stack:
            raise self.fail(
                "the YAML contains an alias that refers to itself",
                node,
                hint="write the value out instead of the '*' alias",
            )
        stack = stack | {id(node)}
        if isinstance(node, yaml.SequenceNode):
            return [
                self.build(item, (*path, i), depth + 1, stack) for i, item in enumerate(node.value)
            ]
        return self.mapping(node, path, depth, stack)

    def mapping(
        self, node: yaml.MappingNode, path: KeyPath, depth: int, stack: frozenset[int]
    ) -> dict[str, Any]:
        result: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag.endswith(":merge"):
                sources = (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                for source in sources:
                    value = self.build(source, path, depth + 1, stack)
                    if not isinstance(value, dict):
                        raise self.fail(
                            "a '<<' merge key needs a mapping",
                            value_node,
                            hint="merge an '&anchor' of a mapping, or write the keys out",
                        )
                    merged = {**value, **merged}
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(
                    "a mapping key must be a plain value, not a list or mapping", key_node
                )
            key = str(key_node.value)
            if key in result:
                raise self.fail(
                    f"the key {key!r} appears twice in the same mapping",
                    key_node,
                    hint="keep one of the two; YAML would silently drop the first",
                )
            self.doc.lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, (*path, key), depth + 1, stack)
        return {**merged, **result}


def dump_yaml(data: Any, header: str | None = None) -> str:
    body = yaml.dump(
        data,
        Dumper=_SafeDumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )
    return (header or "") + body


# ---------------------------------------------------------------------------- JSON


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text: str, source: str) -> Document:
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                duplicates.append(key)
            result[key] = value
        return result

    try:
        data = json.loads(text, object_pairs_hook=pairs, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"the JSON does not parse: {exc.msg} (column {exc.colno})",
            location=f"{source}:{exc.lineno}",
            hint="check for a missing comma or quote, or a trailing comma, near that line",
        ) from None
    except ValueError as exc:  # NaN, Infinity or -Infinity
        constants: list[tuple[str, KeyPath, int]] = []
        with contextlib.suppress(RecursionError, IndexError, ValueError):
            json_key_lines(text, constants)
        line = next((n for kind, _, n in constants if kind == "constant"), None)
        raise ConfigError(
            f"the JSON does not parse: {exc}",
            location=f"{source}:{line}" if line else source,
            hint="write a finite number, or null",
        ) from None
    except RecursionError:
        raise ConfigError(
            "the JSON is nested too deeply",
            location=source,
            hint="stagewise files need only a few levels; flatten the structure",
        ) from None
    found: list[tuple[str, KeyPath, int]] = []
    lines = json_key_lines(text, found)
    if duplicates:
        where = next(((p, n) for kind, p, n in found if kind == "duplicate"), None)
        key = where[0][-1] if where else duplicates[0]
        raise ConfigError(
            f"the key {key!r} appears twice in the same object"
            + (f" ({format_key(where[0])})" if where else ""),
            location=f"{source}:{where[1]}" if where else source,
            hint="keep one of the two; JSON readers would silently drop the first",
        )
    return Document(data=data, source=source, lines=lines)


_JSON_ATOM = re.compile(r"[^\s,\]\}]+")


def json_key_lines(
    text: str, found: list[tuple[str, KeyPath, int]] | None = None
) -> dict[KeyPath, int]:
    """Map each key path of a *valid* JSON text to its 1-based line. ``found`` collects
    ``("duplicate", path, line)`` for a repeated key and ``("constant", path, line)`` for
    NaN or Infinity."""
    found = [] if found is None else found
    newlines = [m.start() for m in re.finditer("\n", text)]
    lines: dict[KeyPath, int] = {}

    def line(index: int) -> int:
        return bisect.bisect_left(newlines, index) + 1

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    def value(i: int, path: KeyPath) -> int:
        i = skip(i)
        lines.setdefault(path, line(i))
        char = text[i]
        if char == '"':
            return scanstring(text, i + 1)[1]
        if char not in "{[":
            match = _JSON_ATOM.match(text, i)
            if match and match.group() in ("NaN", "Infinity", "-Infinity"):
                found.append(("constant", path, line(i)))
            return match.end() if match else i + 1
        closing, i, index = ("}" if char == "{" else "]"), skip(i + 1), 0
        while text[i] != closing:
            if char == "{":
                key_start = i
                key, i = scanstring(text, i + 1)
                if (*path, key) in lines:
                    found.append(("duplicate", (*path, key), line(key_start)))
                lines[(*path, key)] = line(key_start)
                i = value(skip(i) + 1, (*path, key))  # step over ':'
            else:
                i = value(i, (*path, index))
                index += 1
            i = skip(i)
            if text[i] == ",":
                i = skip(i + 1)
        return i + 1

    value(0, ())
    return lines


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=4, ensure_ascii=False) + "\n"
