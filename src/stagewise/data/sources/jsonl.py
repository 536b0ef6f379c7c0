"""Reading JSONL files: each chunk of ``chunk_rows`` lines goes through pyarrow's JSON reader
and, when that fails or might disagree with ``json.loads``, line by line, which locates bad
lines. The first chunk of a read fixes the columns and types; JSON strings stay strings.
:class:`_JsonlReader` holds these methods for
:class:`~stagewise.data.sources.files.FileSource`."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pjson

from stagewise.data.sources.base import (
    _CONVERSION_ERRORS,
    Source,
    _project,
    _ReadState,
    _reason,
)
from stagewise.data.sources.locations import _File

_JSONL_TYPES_HINT = (
    "JSONL columns and types come from the first chunk of rows: put a record with every key "
    "and non-null values first, or read with a larger chunk_rows"
)
# Past this many type conflicts in the first chunk, re-inferring the types after each one
# would cost a chunk's conversion per bad row; the rows before the last conflict fix them.
_INFER_RETRIES = 8


class _JsonlReader(Source):
    """The JSONL reader of :class:`~stagewise.data.sources.files.FileSource`; ``_defaults``
    gives the values that fill a key a record lacks (a JSONL list's dataset name)."""

    def _jsonl(
        self, file: _File, chunk_rows: int, columns: list[str] | None, state: _ReadState
    ) -> Iterator[pa.RecordBatch]:
        defaults = self._defaults(file)
        with file.open() as handle:
            first = 1
            while lines := list(itertools.islice(handle, chunk_rows)):
                if first == 1:
                    lines[0] = lines[0].removeprefix(b"\xef\xbb\xbf")  # json.loads refuses a BOM
                batches = self._jsonl_fast(lines, state, defaults)
                if batches is None:
                    batches = self._jsonl_slow(lines, first, file, state, defaults)
                for batch in batches:
                    yield _project(batch, columns, file.name)
                first += len(lines)

    def _jsonl_fast(
        self, lines: list[bytes], state: _ReadState, defaults: dict[str, Any]
    ) -> list[pa.RecordBatch] | None:
        """pyarrow's JSON reader on a block of lines, or None when the block needs the line
        by line reader: a bad line, a type conflict, or anything the two might disagree on."""
        expected = 0
        for line in lines:
            start = line.lstrip()[:1]
            if start == b"{":
                expected += 1
            elif start:  # pyarrow reads a line of `null` as a row of nulls
                return None
        data = pa.py_buffer(b"".join(lines))
        try:
            table = _parse_json(data, state.schema)
            if state.schema is None and table.schema != _string_times(table.schema):
                # pyarrow reads ISO-looking strings as timestamps; JSON strings stay strings.
                table = _parse_json(data, _string_times(table.schema))
            if table.num_rows != expected:  # e.g. two objects on one line
                return None
            table.validate(full=True)  # pyarrow's reader leaves invalid UTF-8 in strings
            for key, value in defaults.items():
                table = _fill(table, key, value)
        except _CONVERSION_ERRORS:
            return None
        if state.schema is None:
            self._fix_schema(table.schema, state)
        elif not table.schema.equals(state.schema):
            return None
        return table.to_batches()

    def _jsonl_slow(
        self,
        lines: list[bytes],
        first: int,
        file: _File,
        state: _ReadState,
        defaults: dict[str, Any],
    ) -> list[pa.RecordBatch]:
        records: list[dict[str, Any]] = []
        numbers: list[int] = []
        for number, raw in enumerate(lines, start=first):
            record = self._parse_line(raw, number, file)
            if record is None:
                continue
            for key, value in defaults.items():
                if record.get(key) is None:
                    record[key] = value
            records.append(record)
            numbers.append(number)
        return self._records_to_batches(records, numbers, file, state)

    def _parse_line(self, raw: bytes, number: int, file: _File) -> dict[str, Any] | None:
        if raw.isspace():
            return None
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            self._bad(f"{file.name}:{number}", f"invalid JSON: {exc.msg} (column {exc.colno})")
            return None
        except UnicodeDecodeError as exc:
            self._bad(f"{file.name}:{number}", f"not UTF-8 text: {exc.reason}")
            return None
        if not isinstance(record, dict):
            self._bad(f"{file.name}:{number}", f"expected a JSON object, found {_kind(record)}")
            return None
        return record

    def _records_to_batches(
        self, records: list[dict[str, Any]], lines: list[int], file: _File, state: _ReadState
    ) -> list[pa.RecordBatch]:
        if not records:
            return []
        if state.schema is not None:
            return self._typed(records, lines, file, state)
        conflicts = 0
        while records:
            try:
                batch = pa.RecordBatch.from_pylist(records)
            except _CONVERSION_ERRORS:
                index, reason = _first_conflict(records)
                self._bad(f"{file.name}:{lines[index]}", f"type conflict: {reason}")
                del records[index], lines[index]
                conflicts += 1
                if conflicts >= _INFER_RETRIES and index > 0:
                    self._fix_schema(pa.RecordBatch.from_pylist(records[:index]).schema, state)
                    return self._typed(records, lines, file, state)
                continue
            self._fix_schema(batch.schema, state)
            return [batch]
        return []

    def _fix_schema(self, schema: pa.Schema, state: _ReadState) -> None:
        state.schema, state.names = schema, frozenset(schema.names)

    def _typed(
        self, records: list[dict[str, Any]], lines: list[int], file: _File, state: _ReadState
    ) -> list[pa.RecordBatch]:
        """Convert to the fixed schema; rows that do not fit are bad rows."""
        kept_records, kept_lines = [], []
        for record, line in zip(records, lines, strict=True):
            if state.names.issuperset(record):
                kept_records.append(record)
                kept_lines.append(line)
                continue
            extra = next(key for key in record if key not in state.names)
            columns = ", ".join(state.schema.names)
            reason = f"key {extra!r} is not a column of the first rows ({columns})"
            self._bad(f"{file.name}:{line}", reason, _JSONL_TYPES_HINT)
        return self._convert(kept_records, kept_lines, file, state.schema)

    def _convert(
        self, records: list[dict[str, Any]], lines: list[int], file: _File, schema: pa.Schema
    ) -> list[pa.RecordBatch]:
        # Halving finds the few bad rows of a chunk in O(n log n) without converting
        # each row alone.
        if not records:
            return []
        try:
            return [pa.RecordBatch.from_pylist(records, schema=schema)]
        except _CONVERSION_ERRORS as exc:
            if len(records) == 1:
                reason = f"type conflict with the first rows: {_reason(exc)}"
                self._bad(f"{file.name}:{lines[0]}", reason, _JSONL_TYPES_HINT)
                return []
        half = len(records) // 2
        return self._convert(records[:half], lines[:half], file, schema) + self._convert(
            records[half:], lines[half:], file, schema
        )

    def _defaults(self, file: _File) -> dict[str, Any]:
        return {}


def _parse_json(data: pa.Buffer, schema: pa.Schema | None) -> pa.Table:
    options = pjson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    if schema is None:
        options = pjson.ParseOptions()
    read = pjson.ReadOptions(block_size=max(data.size, 1 << 16))
    return pjson.read_json(pa.BufferReader(data), read_options=read, parse_options=options)


def _string_times(schema: pa.Schema) -> pa.Schema:
    return pa.schema([field.with_type(_string_time(field.type)) for field in schema])


def _string_time(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(kind):
        return pa.string()
    if pa.types.is_struct(kind):
        fields = [kind.field(i) for i in range(kind.num_fields)]
        return pa.struct([f.with_type(_string_time(f.type)) for f in fields])
    if pa.types.is_list(kind):
        return pa.list_(kind.value_field.with_type(_string_time(kind.value_type)))
    return kind


def _fill(table: pa.Table, key: str, value: str) -> pa.Table:
    """``table`` with ``key`` set to ``value`` where it is missing or null."""
    if key not in table.schema.names:
        return table.append_column(key, pa.array([value] * table.num_rows, pa.string()))
    index = table.schema.get_field_index(key)
    column = table.column(index)
    if column.null_count == 0:
        return table
    if pa.types.is_null(column.type):
        column = pa.array([value] * table.num_rows, pa.string())
    else:
        column = pc.fill_null(column, value)
    return table.set_column(index, key, column)


def _first_conflict(records: list[dict[str, Any]]) -> tuple[int, str]:
    """The first record that cannot be typed together with the records before it."""
    low, high = 1, len(records)  # records[:high] is known not to convert
    while low < high:
        middle = (low + high) // 2
        try:
            pa.RecordBatch.from_pylist(records[:middle])
        except _CONVERSION_ERRORS:
            high = middle
        else:
            low = middle + 1
    try:
        pa.RecordBatch.from_pylist(records[:low])
    except _CONVERSION_ERRORS as exc:
        return low - 1, _reason(exc)
    return low - 1, "its values do not fit the types of the rows before it"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return {list: "an array", str: "a string"}.get(type(value), "null")
