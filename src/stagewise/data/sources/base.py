"""What every source shares: :class:`Source` (bounded batches, ``on_error`` accounting,
``schema()``), :class:`ReadReport`, ``OnError``, and the small helpers that the file and SQL
readers use (projection to ``columns=``, error reasons, digests)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

from stagewise.errors import SourceError

OnError = Literal["raise", "skip"]

DEFAULT_CHUNK_ROWS = 65_536
MAX_FIRST_ERRORS = 5

_ROW_HINT = "fix the row, or read with on_error='skip' to skip bad rows and count them"
_CONVERSION_ERRORS = (pa.ArrowException, OverflowError, TypeError, ValueError)


@dataclass
class ReadReport:
    """What reading a source found. ``batches()`` resets ``rows``, ``skipped`` and
    ``first_errors``, which then fill as batches are read; ``files`` (the files of the
    source) and ``missing`` (files of a JSONL list skipped because they do not exist) are
    set when the source is opened."""

    rows: int = 0
    skipped: int = 0
    first_errors: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


@dataclass
class _ReadState:
    """What the first file of a read fixes for the files after it."""

    schema: pa.Schema | None = None
    names: frozenset[str] = frozenset()
    first: str = ""


class Source(ABC):
    """Rows from somewhere, read as a stream of record batches: see
    :mod:`stagewise.data.sources`."""

    description: str
    report: ReadReport
    on_error: OnError

    def batches(
        self, chunk_rows: int = DEFAULT_CHUNK_ROWS, columns: list[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Stream the rows (only ``columns``, in that order, when given) as record batches of
        at most ``chunk_rows`` rows."""
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise SourceError(
                f"chunk_rows must be a positive integer, not {chunk_rows!r}",
                location=self.description,
            )
        if columns is not None:
            columns = list(columns)
            if len(set(columns)) != len(columns):
                raise SourceError(
                    f"columns {columns} name a column twice", location=self.description
                )
        self.report.rows = 0
        self.report.skipped = 0
        self.report.first_errors = []
        return self._stream(chunk_rows, columns)

    @abstractmethod
    def fingerprint(self) -> str:
        """A cheap, stable hex digest of the source's identity and state."""

    def schema(self) -> pa.Schema:
        """The columns and types of the batches; reads a footer or at most the first chunk.
        Leaves ``report`` as it was."""
        real = self.report
        self.report = ReadReport(files=list(real.files), missing=list(real.missing))
        try:
            with contextlib.closing(self._read(DEFAULT_CHUNK_ROWS, None)) as batches:
                for batch in batches:
                    return batch.schema
        finally:
            self.report = real
        return pa.schema([])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"

    @abstractmethod
    def _read(self, chunk_rows: int, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        """Batches of any size, possibly empty; an empty first batch carries the schema."""

    def _stream(self, chunk_rows: int, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        with contextlib.closing(self._read(chunk_rows, columns)) as batches:
            for batch in batches:
                for start in range(0, batch.num_rows, chunk_rows):
                    piece = batch.slice(start, chunk_rows)
                    self.report.rows += piece.num_rows
                    yield piece

    def _bad(self, where: str, reason: str, hint: str = _ROW_HINT) -> None:
        if self.on_error == "raise":
            raise SourceError(reason, location=where, hint=hint)
        self.report.skipped += 1
        if len(self.report.first_errors) < MAX_FIRST_ERRORS:
            self.report.first_errors.append(f"{where}: {reason}")


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=schema)


def _check_columns(schema: pa.Schema, columns: list[str] | None, where: str) -> None:
    absent = [c for c in columns or () if c not in schema.names]
    if absent:
        raise SourceError(
            f"no column {', '.join(map(repr, absent))}",
            location=where,
            hint=f"columns there: {', '.join(schema.names) or 'none'}",
        )


def _project(batch: pa.RecordBatch, columns: list[str] | None, where: str) -> pa.RecordBatch:
    if columns is None:
        return batch
    _check_columns(batch.schema, columns, where)
    return batch.select(columns)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
