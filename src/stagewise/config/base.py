"""The base of every file-format model: unknown keys kept, errors located, order kept.

A format model is loaded from a :class:`~stagewise.config.loading.Document` and saved
back with exactly the keys that were in the file (plus what the program changed), in the
file's own key order, so that a load/save round trip changes nothing.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, PrivateAttr, ValidationError
from pydantic.fields import FieldInfo

from stagewise.config.loading import Document, KeyPath, format_key
from stagewise.errors import ConfigError, Problem


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, found {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected a finite number, found {value!r}")
    return value


def _non_negative(value: Any) -> Any:
    value = _number(value)
    if value < 0:
        raise ValueError(f"expected a number >= 0, found {value!r}")
    return value


# Numbers keep their written type (10 stays 10, 0.5 stays 0.5), so a round trip is exact.
Number = Annotated[int | float, BeforeValidator(_number)]
NonNegative = Annotated[int | float, BeforeValidator(_non_negative)]


class FormatModel(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, validate_assignment=True)

    _source: Any = PrivateAttr(default=None)

    def to_data(self) -> dict[str, Any]:
        """The document as plain data: the keys that were read or set, in the file's order."""
        data = self.model_dump(mode="json", exclude_unset=True, by_alias=True)
        return reorder_like(data, self._source)

    def unknown_keys(self, path: KeyPath = ()) -> list[tuple[KeyPath, list[str]]]:
        """Keys that no field declares, with the known keys at that place (for hints)."""
        found: list[tuple[KeyPath, list[str]]] = []
        known = list(type(self).model_fields)
        found += [((*path, key), known) for key in (self.model_extra or {})]
        for name in type(self).model_fields:
            value = getattr(self, name)
            items: list[tuple[Any, Any]] = []
            if isinstance(value, list):
                items = list(enumerate(value))
            elif isinstance(value, dict):
                items = list(value.items())
            elif isinstance(value, FormatModel):
                items = [(None, value)]
            for key, item in items:
                if isinstance(item, FormatModel):
                    sub = (*path, name) if key is None else (*path, name, key)
                    found += item.unknown_keys(sub)
        return found


M = TypeVar("M", bound=FormatModel)


def load_model(model: type[M], doc: Document, *, what: str | None = None) -> M:
    """Validate ``doc`` as ``model``; every problem is reported at once with its line."""
    what = what or model.__name__
    if doc.data is None:
        raise ConfigError(
            f"the file is empty; expected a {what}",
            location=doc.source,
            hint="write the document, or delete the file",
        )
    try:
        obj = model.model_validate(doc.data)
    except ValidationError as exc:
        problems = [_problem(model, doc, err) for err in exc.errors()]
        unique = list(dict.fromkeys(problems))
        raise ConfigError(
            f"{len(unique)} problem{'s' if len(unique) != 1 else ''} in this {what}",
            location=doc.source,
            problems=unique,
        ) from None
    obj._source = doc.data
    return obj


def load_config_file(
    model: type[M], path: str | Path, overrides: Sequence[str] = (), *, what: str
) -> tuple[M, list[Problem]]:
    """Read a config file, apply Hydra-style overrides (``training.lr=3e-4``; a key the
    schema declares can be set without ``+``), check it; returns the config and warnings
    (unknown keys, kept but unused)."""
    from stagewise.config.loading import read_document
    from stagewise.config.overrides import apply_overrides, parse_overrides

    doc = read_document(path, what)
    if overrides:
        if not isinstance(doc.data, dict):
            raise ConfigError(f"the {what} is not a mapping", location=str(path))
        data = apply_overrides(
            doc.data,
            parse_overrides(overrides),
            what=f"the {what}",
            declared=lambda key: field_at(model, key) is not None,
        )
        doc = Document(data, doc.source, doc.lines)
    config = load_model(model, doc, what=what)
    return config, unknown_key_warnings(config, doc)


def unknown_key_warnings(obj: FormatModel, doc: Document) -> list[Problem]:
    """A warning, with its line, for every key no field declares (kept, but unused)."""
    return [
        Problem(
            f"unknown key '{path[-1]}' is ignored"
            + (f" (did you mean '{near}'?)" if (near := suggest(str(path[-1]), known)) else ""),
            file=doc.source,
            line=doc.line_of(path),
            severity="warning",
        )
        for path, known in obj.unknown_keys()
    ]


def _problem(model: type[FormatModel], doc: Document, err: Any) -> Problem:
    loc = _trim_loc(doc.data, err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        message = "a required key is missing"
    elif err["type"] not in ("value_error",) and "input" in err:
        message += f" (found {_short(err['input'])})"
    field = field_at(model, loc)
    hint = f"expected: {field.description}" if field is not None and field.description else None
    return Problem(message, file=doc.source, line=doc.line_of(loc), key=format_key(loc), hint=hint)


def _trim_loc(data: Any, loc: tuple[Any, ...]) -> KeyPath:
    """pydantic adds union member names to locations; keep the part that is in the data."""
    kept: list[str | int] = []
    for part in loc:
        if (isinstance(data, dict) and part in data) or (
            isinstance(data, list) and isinstance(part, int) and part < len(data)
        ):
            data = data[part]
        elif isinstance(data, dict | list) or not kept:
            kept.append(part)  # the missing key itself, or a key at a non-container
            break
        else:
            break
        kept.append(part)
    return tuple(kept)


def field_at(model: type[BaseModel], loc: KeyPath) -> FieldInfo | None:
    """The pydantic field declared at ``loc``, following nested models, lists and dicts."""
    field: FieldInfo | None = None
    current: Any = model
    dict_key = False  # the next part is a key of a dict field (e.g. a stage name)
    for part in loc:
        if isinstance(part, int) or current is None or dict_key:
            dict_key = False
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            current = _inner_model(field.annotation) if field else None
            dict_key = field is not None and "dict[" in str(field.annotation)
        else:
            current = None
    return field


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):  # recurse into the arguments only
        inner = _inner_model(arg)
        if inner is not None:
            return inner
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def reorder_like(new: Any, old: Any) -> Any:
    """``new`` with its dict keys in ``old``'s order (new keys last), recursively."""
    if isinstance(new, dict) and isinstance(old, dict):
        keys = [k for k in old if k in new] + [k for k in new if k not in old]
        return {k: reorder_like(new[k], old.get(k)) for k in keys}
    if isinstance(new, list) and isinstance(old, list):
        return [reorder_like(n, old[i] if i < len(old) else None) for i, n in enumerate(new)]
    return new


def suggest(word: str, choices: list[str]) -> str | None:
    """A 'did you mean' for a mistyped key or name."""
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return match[0] if match else None
