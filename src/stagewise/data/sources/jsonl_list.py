"""Seed 003's multi-file JSONL lists (``train_jsonl_list``): :func:`read_jsonl_list` opens
them as one :class:`JsonlListSource`, which names each record's dataset and counts rows per
dataset, and :func:`format_loading_statistics` prints the seed's loading statistics."""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from stagewise.data.sources.base import DEFAULT_CHUNK_ROWS, OnError, _digest, _plural, _project
from stagewise.data.sources.files import FileSource
from stagewise.data.sources.locations import _File, _file, _filesystem
from stagewise.errors import SourceError

log = logging.getLogger("stagewise.data")


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


def _list_description(files: list[_File]) -> str:
    shown = ", ".join(f.name for f in files[:3])
    more = f" and {len(files) - 3} more" if len(files) > 3 else ""
    return f"{shown}{more} ({_plural(len(files), 'JSONL file')})"


def _dataset_name(path: str) -> str:
    folder = posixpath.basename(posixpath.dirname(path))
    return folder or posixpath.splitext(posixpath.basename(path))[0]
