"""Sources: rows from files, URLs and SQL, streamed as Arrow record batches in bounded memory.

Whatever the size of a source, reading it holds one chunk of rows at a time (for JSONL,
``chunk_rows`` lines; for CSV, one parse block of 1-64 MiB; for Parquet, one row group's
pages; for Arrow IPC, one stored record batch). Every batch that ``Source.batches`` yields
has at most ``chunk_rows`` rows.

Locations (:func:`open_source`)
    A file; a glob (``data/*.jsonl``; ``**`` matches subfolders); a directory, meaning every
    file under it, recursively, in sorted order, that has a supported extension (or the
    extension of ``format=``); any fsspec URL of these (``s3://``, ``memory://``,
    ``file://``, seed 000's ``obs://``). Names starting with ``.`` or ``_`` (``_SUCCESS``,
    ``.part.crc``) are left out of globs and directories. The file list is fixed when the
    source is opened. A SQLAlchemy URL (``sqlite:///x.db``, ``postgresql+psycopg://...``)
    with ``query=`` (the user's own SQL, run as written) or ``table=`` (an identifier,
    optionally ``schema.table``, quoted by SQLAlchemy) reads a database: our stand-in for
    seed 003's ODPS tables.

Formats
    From the extension unless ``format=`` says otherwise: ``jsonl`` (.jsonl, .ndjson,
    .jsonlines), ``csv`` (.csv), ``parquet`` (.parquet, .pq), ``arrow`` (.arrow, .feather,
    .ipc: the Arrow IPC file format or the stream format). JSONL and CSV may be compressed
    in any way fsspec recognises (``.gz``, ``.bz2``, ``.xz``, ...). All files of one source
    share a format: a glob or directory that mixes formats is an error naming them.

Rows and types
    JSONL: one JSON object per line; blank lines are skipped; lines are numbered from 1,
    counting every physical line. Columns and their types come from the first chunk
    (``chunk_rows`` lines) of the first file; a later record with a key outside those
    columns, or a value that does not convert to its column's type, is a bad row. JSON
    strings stay strings (pyarrow would make ISO dates timestamps). A chunk is parsed by
    pyarrow's JSON reader and, when that fails, line by line with ``json.loads``, which is
    what locates bad lines.
    CSV: a header row, types inferred by pyarrow from the first block of the first file
    and imposed on the files after it; rows are numbered as pyarrow counts them (from 1,
    header included: the line number unless a quoted value spans lines). Parquet and Arrow:
    as stored. Every file of a source must have the first file's columns and types.
    SQL: a table's column types come from the database; a query's from its first chunk.
    A table is read in primary-key order when it has one; a query in the order it returns
    rows (give it an ORDER BY for a stable order).

Bad data (``on_error``)
    ``"raise"`` (the default) stops with a :class:`SourceError` located at ``file:line``
    with the reason. ``"skip"`` skips the bad row, counts it in ``ReadReport.skipped`` and
    keeps the first five as ``"file:line: reason"`` in ``ReadReport.first_errors``. Parquet
    and Arrow have no lines: for them (and for any file that cannot be read at all: corrupt,
    truncated, compressed wrongly, another schema) ``"skip"`` skips the whole file and counts
    it once; batches it yielded before failing stay yielded. Two things always raise: a CSV
    value that fails type conversion (pyarrow cannot say which row holds it) and anything
    wrong with a SQL source (a query either runs or fails). Asking for ``columns=`` that a
    source lacks always raises.

Fingerprints (``Source.fingerprint``)
    A SHA-256 hex digest, cheap and stable while the data is unchanged. Files: the format and,
    for each file, its name, size and modification stamp (``st_mtime_ns`` locally; for
    fsspec URLs the first of ETag, mtime, LastModified, created that the filesystem reports).
    SQL: the URL without its password, the query text (or the table name) and the row count,
    which costs one ``COUNT(*)``; a change that keeps the row count is not seen.

Seed 003's multi-file JSONL lists (``train_jsonl_list``): :func:`read_jsonl_list` and
:func:`format_loading_statistics`.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import posixpath
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.ipc as ipc
import pyarrow.json as pjson
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import infer_compression

from stagewise.errors import SourceError, StagewiseError
from stagewise.store.locations import filesystem, is_url, local_path

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "FileSource",
    "JsonlListSource",
    "OnError",
    "ReadReport",
    "Source",
    "SqlSource",
    "format_loading_statistics",
    "open_source",
    "read_jsonl_list",
]

OnError = Literal["raise", "skip"]

DEFAULT_CHUNK_ROWS = 65_536
MAX_FIRST_ERRORS = 5
EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".jsonlines": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
}
FORMATS = ("jsonl", "csv", "parquet", "arrow")
SQL_DIALECTS = {"sqlite", "postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle"}

log = logging.getLogger("stagewise.data")

_ROW_HINT = "fix the row, or read with on_error='skip' to skip bad rows and count them"
_JSONL_TYPES_HINT = (
    "JSONL columns and types come from the first chunk of rows: put a record with every key "
    "and non-null values first, or read with a larger chunk_rows"
)
_CONVERSION_ERRORS = (pa.ArrowException, OverflowError, TypeError, ValueError)
# Past this many type conflicts in the first chunk, re-inferring the types after each one
# would cost a chunk's conversion per bad row; the rows before the last conflict fix them.
_INFER_RETRIES = 8


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


class _UnreadableFile(Exception):
    """A whole file cannot be read: raised, or skipped under on_error='skip'."""

    def __init__(self, reason: str, hint: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


class Source:
    """Rows from somewhere, read as a stream of record batches: see the module docstring."""

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

    def fingerprint(self) -> str:
        """A cheap, stable hex digest of the source's identity and state."""
        raise NotImplementedError

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

    def _read(self, chunk_rows: int, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        """Batches of any size, possibly empty; an empty first batch carries the schema."""
        raise NotImplementedError

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


# --- files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _File:
    fs: Any
    path: str  # within fs
    name: str  # as messages show it: a local path or a URL
    format: str
    compression: str | None

    @property
    def local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def open(self) -> Any:
        if self.local and self.compression is None:
            return open(self.path, "rb")
        return self.fs.open(self.path, "rb", compression=self.compression)

    def stamp(self) -> list[Any]:
        try:
            if self.local:
                stat = os.stat(self.path)
                return [self.name, stat.st_size, stat.st_mtime_ns]
            info = self.fs.info(self.path)
        except FileNotFoundError:
            raise SourceError(
                "file disappeared after the source was opened",
                location=self.name,
                hint="open the source again",
            ) from None
        keys = ("ETag", "etag", "mtime", "LastModified", "last_modified", "created")
        stamp = next((info[k] for k in keys if info.get(k) is not None), None)
        return [self.name, info.get("size"), str(stamp)]


@dataclass
class _ReadState:
    """What the first file of a read fixes for the files after it."""

    schema: pa.Schema | None = None
    names: frozenset[str] = frozenset()
    first: str = ""


class FileSource(Source):
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

    # The readers below yield a file's batches; those of CSV, Parquet and Arrow start with an
    # empty batch that carries the schema, so that schema() reads no rows.

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

    def _defaults(self, file: _File) -> dict[str, Any]:
        return {}


class JsonlListSource(FileSource):
    """Several JSONL files read as one source, counting rows per dataset (seed 003's
    ``train_jsonl_list``): see :func:`read_jsonl_list`."""

    def __init__(
        self, files: list[_File], *, dataset_key: str, on_error: OnError, missing: list[str]
    ) -> None:
        super().__init__(files, description=_list_description(files), on_error=on_error)
        self.dataset_key = dataset_key
        self.report.missing = missing
        self._counts: Counter[str] = Counter()

    def batches(
        self, chunk_rows: int = DEFAULT_CHUNK_ROWS, columns: list[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Stream the rows of every file, in list order; see :meth:`Source.batches`."""
        batches = super().batches(chunk_rows)
        self._counts = Counter()
        return self._counted(batches, columns)

    def dataset_counts(self) -> dict[str, int]:
        """Rows per dataset read so far by the latest ``batches()``, in order of appearance."""
        return dict(self._counts)

    def loading_statistics(self, mode: str = "train") -> str:
        """Seed 003's loading statistics for the rows read: see format_loading_statistics."""
        return format_loading_statistics(self.dataset_counts(), mode)

    def fingerprint(self) -> str:
        files = [f.stamp() for f in self._files]
        return _digest({"format": "jsonl-list", "key": self.dataset_key, "files": files})

    def _counted(
        self, batches: Iterator[pa.RecordBatch], columns: list[str] | None
    ) -> Iterator[pa.RecordBatch]:
        with contextlib.closing(batches):
            for batch in batches:
                counts = pc.value_counts(batch.column(self.dataset_key))
                for entry in counts.to_pylist():
                    self._counts[str(entry["values"])] += entry["counts"]
                yield _project(batch, columns, self.description)
        log.info("%s", self.loading_statistics())

    def _defaults(self, file: _File) -> dict[str, Any]:
        return {self.dataset_key: _dataset_name(file.path)}


# --- SQL ---------------------------------------------------------------------------------


class SqlSource(Source):
    """A query or table read through SQLAlchemy in chunks (see :func:`open_source`)."""

    def __init__(self, url: str, *, query: str | None, table: str | None) -> None:
        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool

        self.url = _hide_password(url)
        if (query is None) == (table is None):
            raise SourceError(
                "a database source needs exactly one of query= and table=",
                location=self.url,
                hint="pass table='name' to read a table, or query='SELECT ...'",
            )
        if table is not None and not all(part.isidentifier() for part in table.split(".", 1)):
            raise SourceError(
                f"{table!r} is not a table name",
                location=self.url,
                hint="give a plain identifier, or schema.table; for anything else use query=",
            )
        self.query = query.strip().rstrip(";").strip() if query is not None else None
        self.table = table
        self.on_error: OnError = "raise"
        self.description = f"{self.url} ({f'table {table}' if table else 'query'})"
        self.report = ReadReport()
        try:
            # NullPool: each read opens and closes its own connection, leaving no handles.
            self._engine = sa.create_engine(url, poolclass=NullPool)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise SourceError(
                f"cannot use this database URL: {_reason(exc)}",
                location=self.url,
                hint="a SQLAlchemy URL such as sqlite:///data.db or "
                "postgresql+psycopg://user@host/db, with its driver installed",
            ) from None
        database = self._engine.url.database
        if (
            self._engine.url.get_backend_name() == "sqlite"
            and database not in (None, "", ":memory:")
            and not database.startswith("file:")
            and not os.path.exists(database)
        ):
            # Connecting would create an empty database file and report a missing table.
            raise SourceError(
                "no such SQLite database file",
                location=self.url,
                hint="check the path: sqlite:///relative/path.db or sqlite:////absolute/path.db",
            )

    def fingerprint(self) -> str:
        import sqlalchemy as sa

        with self._connection() as conn:
            statement, _ = self._statement(conn, None)
            count = sa.select(sa.func.count()).select_from(statement.subquery("counted"))
            rows = conn.execute(count).scalar_one()
        what = self.query if self.query is not None else f"table {self.table}"
        return _digest({"url": self.url, "what": what, "rows": rows})

    def _read(self, chunk_rows: int, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        with self._connection() as conn:
            statement, types = self._statement(conn, columns)
            conn.execution_options(stream_results=True, yield_per=chunk_rows)
            # Closed explicitly: a server-side cursor left open warns when collected.
            with contextlib.closing(conn.execute(statement)) as result:
                yield from self._result_batches(result, types, chunk_rows, columns)

    def _result_batches(
        self, result: Any, types: list | None, chunk_rows: int, columns: list[str] | None
    ) -> Iterator[pa.RecordBatch]:
        names = list(result.keys())
        if columns is not None and self.query is not None:
            _check_columns(pa.schema([(n, pa.null()) for n in names]), columns, self.url)
        types = types or [None] * len(names)
        first_row = 1
        for rows in result.partitions(chunk_rows):
            batch = self._to_batch(rows, names, types, first_row)
            types = batch.schema.types
            first_row += len(rows)
            yield _project(batch, columns, self.description)
        if first_row == 1:
            schema = pa.schema([(n, t or pa.null()) for n, t in zip(names, types, strict=True)])
            yield _project(_empty(schema), columns, self.description)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        import sqlalchemy as sa

        try:
            with self._engine.connect() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(exc) from None

    def _error(self, exc: Exception) -> SourceError:
        what = f"table {self.table!r}" if self.table else f"query {_shorten(self.query or '')!r}"
        return SourceError(
            f"cannot read {what}: {_reason(getattr(exc, 'orig', None) or exc)}",
            location=self.url,
            hint="check the URL, that the server is up, and the table name or query",
        )

    def _statement(self, conn: Any, columns: list[str] | None) -> tuple[Any, list | None]:
        """The SELECT to run, and the Arrow types the database declares (None: infer)."""
        import sqlalchemy as sa

        if self.query is not None:
            # Escaped colons: the user's SQL runs as written, with no ':name' bind parameters.
            return sa.text(self.query.replace(":", "\\:")).columns(), None
        schema, name = self.table.split(".", 1) if "." in self.table else (None, self.table)
        try:
            table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=conn)
        except sa.exc.NoSuchTableError:
            known = sa.inspect(conn).get_table_names(schema=schema)
            raise SourceError(
                f"no table {self.table!r} in this database",
                location=self.url,
                hint=f"tables there: {', '.join(known[:10]) or 'none'}",
            ) from None
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(exc) from None
        if columns is not None:
            _check_columns(
                pa.schema([(c.name, pa.null()) for c in table.columns]), columns, self.url
            )
        chosen = [table.c[c] for c in columns] if columns is not None else list(table.columns)
        statement = sa.select(*chosen).order_by(*table.primary_key.columns)
        return statement, [_arrow_type(column.type) for column in chosen]

    def _to_batch(
        self, rows: Sequence[Any], names: list[str], types: list[Any], first_row: int
    ) -> pa.RecordBatch:
        arrays = []
        for index, (name, kind) in enumerate(zip(names, types, strict=True)):
            try:
                arrays.append(pa.array([row[index] for row in rows], type=kind))
            except _CONVERSION_ERRORS as exc:
                last = first_row + len(rows) - 1
                raise SourceError(
                    f"column {name!r}, rows {first_row:,}-{last:,}: {_reason(exc)}",
                    location=self.description,
                    hint="give the column one type (CAST it in a query); a query's types come "
                    "from its first chunk, so a column that is all NULL there has no type",
                ) from None
        return pa.RecordBatch.from_arrays(arrays, names=names)


# --- opening ----------------------------------------------------------------------------


def open_source(
    location: str | os.PathLike[str],
    *,
    format: str | None = None,
    on_error: OnError = "raise",
    query: str | None = None,
    table: str | None = None,
) -> Source:
    """Open a file, glob, directory, fsspec URL, or SQLAlchemy URL with ``query=`` or
    ``table=``, as described in the module docstring. Files are listed now, read later."""
    text = str(os.fspath(location))
    if on_error not in ("raise", "skip"):
        raise SourceError(f"on_error must be 'raise' or 'skip', not {on_error!r}", location=text)
    if query is not None or table is not None or _is_database_url(text):
        return SqlSource(text, query=query, table=table)
    if format is not None and format not in FORMATS:
        raise SourceError(
            f"unknown format {format!r}", location=text, hint=f"use one of {', '.join(FORMATS)}"
        )
    fs, path = _filesystem(text)
    if any(char in path for char in "*?["):
        files = _glob(fs, path, text, format)
        description = f"{text} ({_plural(len(files), 'file')})"
    else:
        try:
            info = fs.info(path)
        except FileNotFoundError:
            raise SourceError(
                "no such file or directory",
                location=text,
                hint="check the path; a glob (data/*.jsonl) or a directory works too",
            ) from None
        if info.get("type") == "directory":
            files = _directory(fs, path, text, format)
            description = f"{text} ({_plural(len(files), 'file')})"
        else:
            files = [_file(fs, path, format, text)]
            description = files[0].name
    return FileSource(files, description=description, on_error=on_error)


def read_jsonl_list(
    paths: Sequence[str | os.PathLike[str]],
    *,
    missing: Literal["warn", "error"] = "warn",
    dataset_key: str = "dataset_name",
    on_error: OnError = "raise",
) -> JsonlListSource:
    """Seed 003's ``train_jsonl_list``: several JSONL files (paths or fsspec URLs) read as
    one source, in list order. A record without ``dataset_key`` gets the name of its file's
    parent folder (``/data/food101/train.jsonl`` -> ``food101``; the file's stem for a file
    at a root). A file that does not exist when the list is opened is logged as a warning on
    the ``stagewise.data`` logger (the seed's ``⚠️ 跳过不存在的文件: PATH``), listed in
    ``report.missing`` and skipped; with ``missing="error"`` it raises. No existing file at
    all raises. ``dataset_counts()`` gives the rows per dataset after reading."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if missing not in ("warn", "error"):
        raise SourceError(f"missing must be 'warn' or 'error', not {missing!r}")
    if on_error not in ("raise", "skip"):
        raise SourceError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    if not paths:
        raise SourceError("no JSONL files given", hint="list the files in train_jsonl_list")
    files: list[_File] = []
    absent: list[str] = []
    for entry in paths:
        text = str(os.fspath(entry))
        fs, path = _filesystem(text)
        if fs.isfile(path):
            files.append(_file(fs, path, "jsonl", text))
        elif missing == "error":
            raise SourceError(
                "data file not found",
                location=text,
                hint="fix the path, or pass missing='warn' to skip missing files as seed 003 does",
            )
        else:
            log.warning("⚠️ 跳过不存在的文件: %s", text)
            absent.append(text)
    if not files:
        raise SourceError(
            f"none of the {_plural(len(absent), 'JSONL file')} exists",
            location=", ".join(absent),
            hint="check the paths in the JSONL list",
        )
    return JsonlListSource(files, dataset_key=dataset_key, on_error=on_error, missing=absent)


_MODES = {"train": "训练模式", "eval": "评估模式", "evaluation": "评估模式"}


def format_loading_statistics(counts: Mapping[str, int], mode: str = "train") -> str:
    """Seed 003's loading statistics: a headline, one line per dataset with its share of the
    total (one decimal), and the total. ``mode`` is ``"train"`` (训练模式), ``"eval"``
    (评估模式), or a label used as given."""
    total = sum(counts.values())
    lines = [f"📊 多数据集加载统计 ({_MODES.get(mode, mode)}):"]
    for name, count in counts.items():
        share = 100 * count / total if total else 0.0
        lines.append(f"  • {name}: {count:,} samples ({share:.1f}%)")
    lines.append(f"📊 总计: {total:,} samples")
    return "\n".join(lines)


def _filesystem(text: str) -> tuple[Any, str]:
    if not is_url(text):
        path = os.path.abspath(os.path.expanduser(local_path(text)))
        return fsspec.filesystem("file"), path
    try:
        return filesystem(text)
    except StagewiseError as exc:
        raise SourceError(exc.headline, location=exc.location, hint=exc.hint) from None


def _name(fs: Any, path: str) -> str:
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def _format_of(path: str) -> tuple[str | None, str | None]:
    """The format and the compression that a file name implies."""
    compression = infer_compression(path)
    stem = posixpath.splitext(path)[0] if compression else path
    return EXTENSIONS.get(posixpath.splitext(stem)[1].lower()), compression


def _file(fs: Any, path: str, format: str | None, shown: str) -> _File:
    implied, compression = _format_of(path)
    chosen = format or implied
    if chosen is None:
        raise SourceError(
            "unknown file type",
            location=shown,
            hint=f"pass format= (one of {', '.join(FORMATS)}), or use an extension: "
            + ", ".join(EXTENSIONS),
        )
    if compression and chosen in ("parquet", "arrow"):
        raise SourceError(
            f"a compressed ({compression}) {chosen} file cannot be streamed",
            location=shown,
            hint="decompress it first; Parquet and Arrow compress their own data",
        )
    return _File(fs, path, _name(fs, path), chosen, compression)


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _glob(fs: Any, pattern: str, shown: str, format: str | None) -> list[_File]:
    found = fs.glob(pattern, detail=True)
    paths = sorted(
        p
        for p, info in found.items()
        if info.get("type") == "file" and not _hidden(posixpath.basename(p))
    )
    if not paths:
        raise SourceError(
            "no files match this pattern",
            location=shown,
            hint="check the path and the pattern; '**' matches files in subfolders",
        )
    unknown = [p for p in paths if format is None and _format_of(p)[0] is None]
    if unknown:
        raise SourceError(
            f"unknown file type: {', '.join(_name(fs, p) for p in unknown[:5])}",
            location=shown,
            hint="narrow the pattern to data files, or pass format=",
        )
    return _one_format([_file(fs, p, format, shown) for p in paths], shown)


def _directory(fs: Any, root: str, shown: str, format: str | None) -> list[_File]:
    files = []
    for path in sorted(fs.find(root)):
        relative = posixpath.relpath(path, root)
        if any(_hidden(part) for part in relative.split("/")):
            continue
        implied = _format_of(path)[0]
        if implied is not None and format in (None, implied):
            files.append(_file(fs, path, None, shown))
    if not files:
        wanted = format or ", ".join(FORMATS)
        raise SourceError(
            f"no {wanted} files in this directory",
            location=shown,
            hint="data files need an extension: " + ", ".join(EXTENSIONS),
        )
    return _one_format(files, shown)


def _one_format(files: list[_File], shown: str) -> list[_File]:
    by_format: dict[str, list[str]] = {}
    for file in files:
        by_format.setdefault(file.format, []).append(file.name)
    if len(by_format) > 1:
        parts = [
            f"{fmt} ({_plural(len(names), 'file')}, e.g. {posixpath.basename(names[0])})"
            for fmt, names in sorted(by_format.items())
        ]
        raise SourceError(
            f"mixed formats: {'; '.join(parts)}",
            location=shown,
            hint="point at one format: a glob such as data/*.parquet, or one folder per format",
        )
    return files


def _list_description(files: list[_File]) -> str:
    shown = ", ".join(f.name for f in files[:3])
    more = f" and {len(files) - 3} more" if len(files) > 3 else ""
    return f"{shown}{more} ({_plural(len(files), 'JSONL file')})"


def _dataset_name(path: str) -> str:
    folder = posixpath.basename(posixpath.dirname(path))
    return folder or posixpath.splitext(posixpath.basename(path))[0]


def _is_database_url(text: str) -> bool:
    scheme = text.split("://", 1)[0] if "://" in text else ""
    return scheme.split("+", 1)[0].lower() in SQL_DIALECTS


# --- helpers -----------------------------------------------------------------------------


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=schema)


def _select(schema: pa.Schema, columns: list[str] | None) -> pa.Schema:
    return schema if columns is None else pa.schema([schema.field(c) for c in columns])


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


def _arrow_type(sql_type: Any) -> pa.DataType | None:
    """The Arrow type for a declared SQL column type, or None to infer it from the values."""
    import sqlalchemy as sa

    if isinstance(sql_type, sa.Boolean):
        return pa.bool_()
    if isinstance(sql_type, sa.Integer):
        return pa.int64()
    if isinstance(sql_type, sa.Float):
        return pa.float64()
    if isinstance(sql_type, sa.String):
        return pa.string()
    if isinstance(sql_type, sa.LargeBinary):
        return pa.binary()
    if isinstance(sql_type, sa.DateTime):
        return pa.timestamp("us", tz="UTC" if sql_type.timezone else None)
    if isinstance(sql_type, sa.Date):
        return pa.date32()
    return None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return {list: "an array", str: "a string"}.get(type(value), "null")


def _format_hint(format: str) -> str:
    if format in ("parquet", "arrow"):
        return (
            f"the file may be truncated or not {format}: write it again, pass the right "
            "format=, or read with on_error='skip' to skip unreadable files"
        )
    return "check the file, or read with on_error='skip' to skip unreadable files"


def _schema_text(schema: pa.Schema) -> str:
    return "(" + ", ".join(f"{f.name}: {f.type}" for f in schema) + ")"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _shorten(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _hide_password(url: str) -> str:
    return re.sub(r"^([^:/]+://[^:/@]*:)[^@]*@", r"\1***@", url)


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
