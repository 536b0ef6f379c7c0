"""Where a file source's files are: a file, a glob, a directory or an fsspec URL resolved,
when the source is opened, into a fixed list of :class:`_File` (filesystem, path, format,
compression), with the format taken from the extension or ``format=``."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import infer_compression

from stagewise.data.sources.base import _plural
from stagewise.errors import SourceError, StagewiseError
from stagewise.store.locations import filesystem, is_url, local_path

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
