"""Reading files: :class:`FileSource` streams one or more files of one format (JSONL, CSV,
Parquet, Arrow IPC) as record batches, checks that every file has the first file's columns
and types, and skips a file it cannot read under ``on_error="skip"``."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from stagewise.data.sources.base import (
    _ROW_HINT,
    OnError,
    ReadReport,
    _check_columns,
    _digest,
    _empty,
    _project,
    _ReadState,
    _reason,
)
from stagewise.data.sources.jsonl import _JsonlReader
from stagewise.data.sources.locations import _File
from stagewise.errors import SourceError


class _UnreadableFile(Exception):
    """A whole file cannot be read: raised, or skipped under on_error='skip'."""

    def __init__(self, reason: str, hint: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


class FileSource(_JsonlReader):
    """One or more files of one format (see :func:`open_source`)."""

    def __init__(self, files: list[_File], *, description: str, on_error: OnError) -> None:
        self._files = files
        self.format = files[0].format
        self.description = description
        self.on_error = on_error
        self.report = ReadReport(files=[f.name for f in files])

    def fingerprint(self) -> str:
        return _digest({"format": self.format, "files": [f.stamp() for f in self._files]})

    def _read(self, chunk_rows: int, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        state = _ReadState()
        reader = getattr(self, f"_{self.format}")
        for file in self._files:
            try:
                yield from reader(file, chunk_rows, columns, state)
            except _UnreadableFile as exc:
                self._unreadable(file, exc.reason, exc.hint)
            except (OSError, EOFError, pa.ArrowException) as exc:
                self._unreadable(file, _reason(exc), _format_hint(file.format))

    def _unreadable(self, file: _File, reason: str, hint: str) -> None:
        reason = f"cannot read this {file.format} file: {reason}"
        if self.on_error == "raise":
            raise SourceError(reason, location=file.name, hint=hint)
        self._bad(file.name, reason)

    def _same_schema(self, file: _File, schema: pa.Schema, state: _ReadState) -> None:
        if state.schema is None:
            state.schema, state.first = schema, file.name
        elif not schema.equals(state.schema, check_metadata=False):
            raise _UnreadableFile(
                f"its columns differ from those of {state.first}: {_schema_text(schema)} "
                f"instead of {_schema_text(state.schema)}",
                "give every file of a source the same columns and types",
            )

    # The readers below (and _jsonl, from _JsonlReader) yield a file's batches; those of CSV,
    # Parquet and Arrow start with an empty batch that carries the schema, so that schema()
    # reads no rows.

    def _csv(
        self, file: _File, chunk_rows: int, columns: list[str] | None, state: _ReadState
    ) -> Iterator[pa.RecordBatch]:
        invalid: list[tuple[str, str]] = []

        def on_invalid_row(row: Any) -> str:
            where = f"{file.name}:{row.number}" if row.number is not None else file.name
            reason = (
                f"expected {row.expected_columns} columns, found {row.actual_columns}: "
                f"{row.text[:80]!r}"
            )
            if self.on_error == "raise":
                invalid.append((where, reason))  # raised below, outside pyarrow's callback
                return "error"
            self._bad(where, reason)
            return "skip"

        # Serial parsing is what makes pyarrow number the rows for the handler.
        read_options = pcsv.ReadOptions(
            use_threads=False, block_size=min(max(chunk_rows * 256, 1 << 20), 64 << 20)
        )
        parse_options = pcsv.ParseOptions(
            newlines_in_values=True, invalid_row_handler=on_invalid_row
        )
        convert_options = pcsv.ConvertOptions(include_columns=columns, column_types=state.schema)
        with file.open() as handle:
            try:
                reader = pcsv.open_csv(
                    handle,
                    read_options=read_options,
                    parse_options=parse_options,
                    convert_options=convert_options,
                )
                self._same_schema(file, reader.schema, state)
                yield _empty(reader.schema)
                yield from reader
            except pa.ArrowKeyError as exc:
                found = re.search(r"Column '(.*)' in include_columns", str(exc))
                raise SourceError(
                    f"no column {found.group(1)!r}" if found else _reason(exc),
                    location=file.name,
                    hint="columns= must name fields of the CSV header",
                ) from None
            except pa.ArrowInvalid as exc:
                if invalid:
                    raise SourceError(
                        invalid[0][1], location=invalid[0][0], hint=_ROW_HINT
                    ) from None
                if "conversion error" in str(exc):
                    raise SourceError(
                        _reason(exc),
                        location=file.name,
                        hint="a CSV column's type is inferred from the first block of the "
                        "first file: fix the value, or convert the data to Parquet",
                    ) from None
                raise

    def _parquet(
        self, file: _File, chunk_rows: int, columns: list[str] | None, state: _ReadState
    ) -> Iterator[pa.RecordBatch]:
        with contextlib.ExitStack() as stack:
            source = file.path if file.local else stack.enter_context(file.open())
            parquet = stack.enter_context(pq.ParquetFile(source))
            schema = parquet.schema_arrow
            _check_columns(schema, columns, file.name)
            schema = _select(schema, columns)
            self._same_schema(file, schema, state)
            yield _empty(schema)
            yield from parquet.iter_batches(batch_size=chunk_rows, columns=columns)

    def _arrow(
        self, file: _File, chunk_rows: int, columns: list[str] | None, state: _ReadState
    ) -> Iterator[pa.RecordBatch]:
        with pa.memory_map(file.path) if file.local else file.open() as handle:
            is_file_format = handle.read(6) == b"ARROW1"
            handle.seek(0)
            if is_file_format:
                reader = ipc.open_file(handle)
                stored = (reader.get_batch(i) for i in range(reader.num_record_batches))
            else:
                reader = ipc.open_stream(handle)
                stored = iter(reader)
            _check_columns(reader.schema, columns, file.name)
            self._same_schema(file, _select(reader.schema, columns), state)
            yield _empty(_select(reader.schema, columns))
            for batch in stored:
                yield _project(batch, columns, file.name)


def _select(schema: pa.Schema, columns: list[str] | None) -> pa.Schema:
    return schema if columns is None else pa.schema([schema.field(c) for c in columns])


def _format_hint(format: str) -> str:
    if format in ("parquet", "arrow"):
        return (
            f"the file may be truncated or not {format}: write it again, pass the right "
            "format=, or read with on_error='skip' to skip unreadable files"
        )
    return "check the file, or read with on_error='skip' to skip unreadable files"


def _schema_text(schema: pa.Schema) -> str:
    return "(" + ", ".join(f"{f.name}: {f.type}" for f in schema) + ")"
