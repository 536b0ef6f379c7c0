"""Writing a store version: everything goes to a temporary folder, metadata.json last, then
one rename publishes it and LATEST moves to it. A crash at any point leaves the previous
version as LATEST and readable; the half-written folder is never read and is swept later."""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import shutil
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from stagewise import __version__
from stagewise.data.samples.format import (
    FORMAT_VERSION,
    LATEST_FILE,
    METADATA_FILE,
    TEMP_PREFIX,
    VERSION_PREFIX,
    ArrayInfo,
    ColumnInfo,
    ShardInfo,
    SplitInfo,
    StoreMetadata,
    WindowInfo,
)
from stagewise.errors import StoreError
from stagewise.store.atomic import _fsync_dir, atomic_write

SHARD_BYTES = 128 * 1024 * 1024  # one shard is about this much; a writer buffers one per split
_CANONICAL_SPLITS = ("train", "val", "test")
_HASH_BLOCK = 8 * 1024 * 1024


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def column_array(split: str, name: str) -> str:
    """The name under ``arrays`` of a fixed-width column's values in one split."""
    return f"column:{split}:{name}"


def fixed_layout(field: pa.Field) -> tuple[np.dtype[Any], tuple[int, ...]] | None:
    """(dtype, per-row shape) of a column that can live in a contiguous array, else None."""
    kind = field.type
    shape: tuple[int, ...] = ()
    if pa.types.is_fixed_size_list(kind):
        declared = (field.metadata or {}).get(b"shape")
        shape = tuple(json.loads(declared)) if declared else (kind.list_size,)
        kind = kind.value_type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)) or pa.types.is_float16(kind):
        return None
    return np.dtype(kind.to_pandas_dtype()), shape


def fixed_values(
    column: pa.Array | pa.ChunkedArray, dtype: np.dtype[Any], shape: tuple[int, ...], name: str
) -> np.ndarray:
    """A fixed-width column as a C-contiguous array. Missing floats become NaN; a missing
    integer is an error (it has no value to become)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    flat = column.flatten() if shape else column
    if column.null_count or flat.null_count:
        if dtype.kind != "f":
            raise StoreError(
                f"column {name!r} has missing values, and integers cannot hold them",
                hint="fill them in a transform, or cast the column to float (missing -> NaN)",
            )
        if shape and column.null_count:
            raise StoreError(
                f"column {name!r} has missing rows",
                hint="fill or drop those rows in a transform",
            )
    values = flat.to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values, dtype=dtype).reshape(len(column), *shape)


def column_infos(schema: pa.Schema, fixed: set[str] | None = None) -> list[ColumnInfo]:
    infos = []
    for field in schema:
        kind = field.type
        shape: list[int] = []
        if pa.types.is_fixed_size_list(kind):
            declared = (field.metadata or {}).get(b"shape")
            shape = json.loads(declared) if declared else [kind.list_size]
            kind = kind.value_type
        storage = "array" if fixed and field.name in fixed else "shard"
        infos.append(ColumnInfo(name=field.name, type=str(kind), shape=shape, storage=storage))
    return infos


def sweep_temporaries(root: Path) -> None:
    """Remove version folders that crashed writers left behind. A folder's name holds its
    writer's host and process id: on this host, a folder whose process is gone goes once a
    minute old; a folder from another host (a disk shared between machines) only once a
    day old, since its process cannot be checked from here."""
    if not root.is_dir():
        return
    now = time.time()
    for entry in root.iterdir():
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        age = now - entry.stat().st_mtime
        host, pid = _writer_of(entry.name)
        here_and_gone = host == _HOST and pid is not None and not _alive(pid)
        if (here_and_gone and age > 60) or age > 86_400:
            shutil.rmtree(entry, ignore_errors=True)


_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def _writer_of(name: str) -> tuple[str | None, int | None]:
    """(host, pid) from ``.tmp-<key>-<pid>-<random>@<host>``."""
    body, _, host = name[len(TEMP_PREFIX) :].rpartition("@")
    parts = body.rsplit("-", 2)
    pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
    return (host or None), pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class StoreWriter:
    """Builds one version of the store at ``root``; use as a context manager."""

    def __init__(
        self, root: str | os.PathLike[str], key: str, *, kind: str = "table", replace: bool = False
    ) -> None:
        """``replace``: publish even when a version of ``key`` exists (a forced rebuild)."""
        self.root = Path(root)
        self.replace = replace
        self.key = key
        self.kind = kind
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the store folder: {exc.strerror}",
                location=str(self.root),
                hint="choose an output folder you can write to",
            ) from None
        sweep_temporaries(self.root)
        self.temp = self.root / (
            f"{TEMP_PREFIX}{key[:12]}-{os.getpid()}-{uuid.uuid4().hex[:8]}@{_HOST}"
        )
        (self.temp / "shards").mkdir(parents=True)
        (self.temp / "arrays").mkdir()
        self._buffers: dict[str, list[pa.RecordBatch]] = defaultdict(list)
        self._buffered_bytes: dict[str, int] = defaultdict(int)
        self._shards: dict[str, list[ShardInfo]] = defaultdict(list)
        self._schema: pa.Schema | None = None
        self._arrays: dict[str, ArrayInfo] = {}
        self._array_files: dict[str, np.ndarray] = {}
        self._shard_count = 0
        # Fixed-width columns (numbers, fixed-size lists of numbers) go to one raw file per
        # split and column, appended batch by batch: a split's column is then one
        # contiguous array that a reader maps and indexes like any numpy array.
        self._fixed: dict[str, tuple[np.dtype[Any], tuple[int, ...]]] = {}
        self._column_files: dict[tuple[str, str], Any] = {}
        self._split_rows: dict[str, int] = {}
        self.published: Path | None = None

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if self.published is None:
            self.abort()

    # rows ------------------------------------------------------------------------------
    def add_batch(self, batch: pa.RecordBatch | pa.Table, split: str = "train") -> None:
        if batch.num_rows == 0:
            return
        if self._schema is None:
            self._schema = batch.schema
            self._fixed = {
                f.name: layout for f in self._schema if (layout := fixed_layout(f)) is not None
            }
        elif not batch.schema.equals(self._schema, check_metadata=False):
            raise StoreError(
                "a batch has a different schema from the first one",
                location=f"split {split!r}",
                hint=f"every batch must have the schema {self._schema}; "
                f"this one has {batch.schema}",
            )
        self._split_rows[split] = self._split_rows.get(split, 0) + batch.num_rows
        for name, (dtype, shape) in self._fixed.items():
            values = fixed_values(batch.column(name), dtype, shape, name)
            self._column_file(split, name).write(memoryview(values).cast("B"))
        rest = [n for n in batch.schema.names if n not in self._fixed]
        if not rest:
            return
        batch = batch.select(rest)
        batches = batch.to_batches() if isinstance(batch, pa.Table) else [batch]
        self._buffers[split].extend(batches)
        self._buffered_bytes[split] += batch.nbytes
        if self._buffered_bytes[split] >= SHARD_BYTES:
            self._flush(split)

    def _column_file(self, split: str, name: str) -> Any:
        handle = self._column_files.get((split, name))
        if handle is None:
            # Numbered, not named: split and column names may hold any character.
            path = self.temp / "columns" / f"{len(self._column_files):04d}.bin"
            path.parent.mkdir(exist_ok=True)
            handle = self._column_files[(split, name)] = open(path, "wb")  # noqa: SIM115
        return handle

    def add_batches(self, batches: Iterable[pa.RecordBatch], split: str = "train") -> None:
        for batch in batches:
            self.add_batch(batch, split)

    def _flush(self, split: str) -> None:
        batches = self._buffers.pop(split, [])
        self._buffered_bytes.pop(split, None)
        if not batches:
            return
        table = pa.Table.from_batches(batches).combine_chunks()
        name = f"shards/{self._shard_count:05d}.arrow"
        self._shard_count += 1
        path = self.temp / name
        # One record batch per shard keeps every column contiguous, so a reader maps it
        # into numpy without a copy.
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
            out.write_table(table, max_chunksize=max(table.num_rows, 1))
        self._shards[split].append(
            ShardInfo(
                file=name, rows=table.num_rows, bytes=path.stat().st_size, sha256=file_sha256(path)
            )
        )

    # arrays ----------------------------------------------------------------------------
    def new_array(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A writable array backed by the version's file: filled in place, so an array
        larger than memory never has to be held in memory."""
        path = self.temp / "arrays" / f"{name}.npy"
        array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        self._array_files[name] = array
        return array

    def add_array(self, name: str, values: np.ndarray) -> None:
        target = self.new_array(name, values.shape, values.dtype)
        target[...] = values

    def release_pages(self, name: str) -> None:
        """Write an array's pages to its file and drop them from this process's memory,
        so that a large output does not count against the writer's resident memory."""
        array = self._array_files[name]
        if isinstance(array, np.memmap):
            array.flush()
            mapping = getattr(array, "_mmap", None)
            if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
                mapping.madvise(mmap.MADV_DONTNEED)

    def _close_arrays(self) -> None:
        for name, array in self._array_files.items():
            if isinstance(array, np.memmap):
                array.flush()
            path = self.temp / "arrays" / f"{name}.npy"
            self._arrays[name] = ArrayInfo(
                file=f"arrays/{name}.npy",
                dtype=str(array.dtype),
                shape=list(array.shape),
                bytes=path.stat().st_size,
                sha256=file_sha256(path),
            )
        self._array_files.clear()

    # publish ---------------------------------------------------------------------------
    def commit(
        self,
        *,
        num_samples: int | None = None,
        splits: dict[str, SplitInfo] | None = None,
        windows: WindowInfo | None = None,
        source: dict[str, Any] | None = None,
        transform: dict[str, Any] | None = None,
        stats: dict[str, Any] | None = None,
    ) -> Path:
        """Write metadata.json, publish the version and point LATEST at it."""
        for split in list(self._buffers):
            self._flush(split)
        self._close_arrays()
        self._close_columns()
        if splits is None:
            splits = {}
            order = [s for s in _CANONICAL_SPLITS if s in self._split_rows]
            order += sorted(s for s in self._split_rows if s not in _CANONICAL_SPLITS)
            start = 0
            for split in order:
                splits[split] = SplitInfo(start=start, count=self._split_rows[split])
                start += self._split_rows[split]
        # Shards in the splits' sample order, so that shard rows line up with samples.
        by_start = sorted(splits, key=lambda name: splits[name].start)
        shards = [shard for split in by_start for shard in self._shards.get(split, [])]
        if num_samples is None:
            num_samples = sum(self._split_rows.values())
        metadata = StoreMetadata(
            format_version=FORMAT_VERSION,
            kind=self.kind,  # type: ignore[arg-type]
            key=self.key,
            created_at=time.strftime("%Y-%m-%d %H:%M:%S"),
            num_samples=num_samples,
            columns=column_infos(self._schema, set(self._fixed))
            if self._schema is not None
            else [],
            splits=splits,
            shards=shards,
            arrays=self._arrays,
            windows=windows,
            source=source or {},
            transform=transform or {},
            stats=stats or {},
            versions={
                "stagewise": __version__,
                "pyarrow": pa.__version__,
                "numpy": np.__version__,
            },
        )
        for folder in (self.temp / "shards", self.temp / "arrays", self.temp / "columns"):
            for file in folder.iterdir() if folder.exists() else ():
                with open(file, "rb+") as handle:
                    os.fsync(handle.fileno())
        atomic_write(self.temp / METADATA_FILE, metadata.model_dump_json(indent=2))
        final = self.root / f"{VERSION_PREFIX}{self.key}"
        if final.exists() and self.replace:
            # A forced rebuild never takes a published name: it is published beside the
            # old version (which readers may hold open) and LATEST moves to it.
            final = self.root / f"{VERSION_PREFIX}{self.key}-r{time.time_ns()}"
        if final.exists():  # a concurrent writer published the same key: same content
            shutil.rmtree(self.temp, ignore_errors=True)
        else:
            os.rename(self.temp, final)
            _fsync_dir(self.root)
        atomic_write(self.root / LATEST_FILE, final.name + "\n")
        self.published = final
        return final

    def _close_columns(self) -> None:
        for (split, name), handle in self._column_files.items():
            handle.close()
            dtype, shape = self._fixed[name]
            path = Path(handle.name)
            self._arrays[column_array(split, name)] = ArrayInfo(
                file=f"columns/{path.name}",
                dtype=str(dtype),
                shape=[self._split_rows[split], *shape],
                bytes=path.stat().st_size,
                sha256=file_sha256(path),
            )
        self._column_files.clear()

    def abort(self) -> None:
        for handle in self._column_files.values():
            handle.close()
        self._column_files.clear()
        self._array_files.clear()
        shutil.rmtree(self.temp, ignore_errors=True)
