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

Modules: ``base`` (:class:`Source`, :class:`ReadReport`, shared helpers), ``locations``
(files, globs, directories and URLs resolved to a file list), ``files`` (:class:`FileSource`:
CSV, Parquet, Arrow), ``jsonl`` (JSONL parsing and bad-line location), ``jsonl_list`` (seed
003's lists and loading statistics), ``sql`` (:class:`SqlSource`); :func:`open_source` is
here.
"""

from __future__ import annotations

import os

from stagewise.data.sources.base import (
    DEFAULT_CHUNK_ROWS,
    MAX_FIRST_ERRORS,
    OnError,
    ReadReport,
    Source,
    _plural,
)
from stagewise.data.sources.files import FileSource
from stagewise.data.sources.jsonl_list import (
    JsonlListSource,
    format_loading_statistics,
    read_jsonl_list,
)
from stagewise.data.sources.locations import (
    EXTENSIONS,
    FORMATS,
    _directory,
    _file,
    _filesystem,
    _glob,
)
from stagewise.data.sources.sql import SQL_DIALECTS, SqlSource, _is_database_url
from stagewise.errors import SourceError

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "EXTENSIONS",
    "FORMATS",
    "MAX_FIRST_ERRORS",
    "SQL_DIALECTS",
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


def open_source(
    location: str | os.PathLike[str],
    *,
    format: str | None = None,
    on_error: OnError = "raise",
    query: str | None = None,
    table: str | None = None,
) -> Source:
    """Open a file, glob, directory, fsspec URL, or SQLAlchemy URL with ``query=`` or
    ``table=``, as described in the package docstring. Files are listed now, read later."""
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
