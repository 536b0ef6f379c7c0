"""Reading a sample store: open in constant time, index like an array, gather batches as
numpy without copying more than the batch.

Opening reads LATEST and metadata.json only. Shards and arrays are memory-mapped on first
use, so the cost of opening does not grow with the number of samples. A store is a
sequence of samples; ``store.split("train")`` is the same kind of object over one split.

Two kinds of store:

- ``table``: one row per sample, columns in Arrow IPC shards. ``store[i]`` is a dict of the
  row's values (numpy scalars and arrays for numeric and tensor columns, Python objects
  for strings and nested values); ``store.take(indices)`` is a dict of column batches.
- ``windows``: the base series is stored once, as ``(time, node, feature)``; sample ``i``
  is a window starting at ``window_starts[i]``. ``store[i]`` gives the views ``x``
  ``(input_len, node, feature)``, ``y`` ``(output_len, node, feature)``, ``te_x`` and
  ``te_y`` (time of day, day of week) without copying; ``take`` stacks a batch.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from stagewise.data.samples.format import (
    LATEST_FILE,
    METADATA_FILE,
    VERSION_PREFIX,
    StoreMetadata,
    parse_metadata,
)
from stagewise.data.samples.writer import column_array, file_sha256
from stagewise.errors import StoreError
from stagewise.store import locations

Index = int | slice | Sequence[int] | np.ndarray


def _home() -> Path:
    return Path(os.environ.get("STAGEWISE_HOME") or ".stagewise")


def _resolve_version(location: str, version: str | None) -> tuple[str, str]:
    """(the version folder, how it was found) for a store root or a version folder."""
    remote = locations.is_url(location)
    base = location.rstrip("/") if remote else locations.local_path(location)

    def exists(path: str) -> bool:
        if remote:
            fs, inner = locations.filesystem(path)
            return bool(fs.exists(inner))
        return os.path.exists(path)

    def read(path: str) -> str:
        if remote:
            fs, inner = locations.filesystem(path)
            with fs.open(inner, "rb") as handle:
                return str(handle.read().decode())
        with open(path, encoding="utf-8") as handle:
            return handle.read()

    def join(*parts: str) -> str:
        return "/".join([base, *parts]) if remote else os.path.join(base, *parts)

    if version:
        name = version if version.startswith(VERSION_PREFIX) else VERSION_PREFIX + version
        if not exists(join(name, METADATA_FILE)):
            raise StoreError(
                f"the store has no version {version!r}",
                location=location,
                hint="'stagewise data inspect STORE' lists the versions",
            )
        return join(name), "version"
    if exists(join(METADATA_FILE)):
        return base, "folder"
    if exists(join(LATEST_FILE)):
        name = read(join(LATEST_FILE)).strip()
        if (
            not name.startswith(VERSION_PREFIX)
            or "/" in name
            or not exists(join(name, METADATA_FILE))
        ):
            raise StoreError(
                f"LATEST names {name!r}, which is not a complete version of this store",
                location=join(LATEST_FILE),
                hint="re-run 'stagewise data preprocess' to publish a version",
            )
        return join(name), "latest"
    if not exists(base):
        raise StoreError(
            "no sample store here: the path does not exist",
            location=location,
            hint="create one with 'stagewise data preprocess --output PATH'",
        )
    raise StoreError(
        "not a sample store (no metadata.json or LATEST)",
        location=location,
        hint="a preprocess may have been interrupted; re-run 'stagewise data preprocess'",
    )


def is_store(location: str) -> bool:
    """Whether ``location`` (a folder or URL prefix) holds a sample store."""
    try:
        if locations.is_url(location):
            fs, base = locations.filesystem(location)
            base = base.rstrip("/")
            return bool(fs.exists(f"{base}/{LATEST_FILE}") or fs.exists(f"{base}/{METADATA_FILE}"))
    except (OSError, ValueError):
        return False
    folder = locations.local_path(location)
    return os.path.isdir(folder) and any(
        os.path.exists(os.path.join(folder, name)) for name in (LATEST_FILE, METADATA_FILE)
    )


def list_versions(location: str) -> list[str]:
    """Published versions of a local store root, oldest first."""
    root = Path(locations.local_path(location))
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(VERSION_PREFIX)]
    found = [p for p in found if (p / METADATA_FILE).exists()]
    return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime)]


class _Files:
    """Local paths of a version's files. A remote version's files are fetched once into a
    content-addressed cache (``$STAGEWISE_HOME/cache/stores/<sha256>``), checked against
    their recorded checksum, and memory-mapped from there; a rebuilt store's new files
    therefore never meet a stale copy."""

    def __init__(self, folder: str, key: str) -> None:
        self.folder = folder
        self.remote = locations.is_url(folder)
        self.cache = _home() / "cache" / "stores"

    def path(self, relative: str, sha256: str) -> str:
        if not self.remote:
            return os.path.join(self.folder, relative)
        target = self.cache / sha256
        if not target.exists():
            self.cache.mkdir(parents=True, exist_ok=True)
            partial = self.cache / f".{sha256}.{uuid.uuid4().hex[:8]}"
            try:
                self._fetch(relative, partial)
                if file_sha256(partial) != sha256:
                    raise StoreError(
                        f"{relative} does not match its checksum in metadata.json",
                        location=self.url(relative),
                        hint="the remote store was changed or damaged: rebuild it",
                    )
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
        return str(target)

    def url(self, relative: str) -> str:
        return self.folder.rstrip("/") + "/" + relative

    def _fetch(self, relative: str, into: Path) -> None:
        fs, path = locations.filesystem(self.url(relative))
        try:
            fs.get(path, str(into))
        except (OSError, FileNotFoundError) as exc:
            raise StoreError(
                f"cannot fetch {relative}: {exc}",
                location=self.url(relative),
                hint="check the URL and your credentials; 'stagewise data verify' lists "
                "what is missing",
            ) from None

    def digest(self, relative: str) -> tuple[int, str]:
        """(size, sha256) of a file as it is where the store lives (remote: streamed)."""
        if not self.remote:
            path = os.path.join(self.folder, relative)
            return os.path.getsize(path), file_sha256(path)
        fs, path = locations.filesystem(self.url(relative))
        digest, size = hashlib.sha256(), 0
        with fs.open(path, "rb") as handle:
            while block := handle.read(8 << 20):
                digest.update(block)
                size += len(block)
        return size, digest.hexdigest()


def open_store(location: str | os.PathLike[str], *, version: str | None = None) -> SampleStore:
    """Open a store root (its LATEST version), or a version folder, local or a URL."""
    location = str(location)
    folder, _ = _resolve_version(location, version)
    where = (
        folder.rstrip("/") + "/" if locations.is_url(folder) else folder + os.sep
    ) + METADATA_FILE
    try:
        if locations.is_url(folder):
            fs, path = locations.filesystem(where)
            with fs.open(path, "rb") as handle:
                text = handle.read()
        else:
            text = Path(where).read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot read metadata.json: {exc}", location=where) from None
    metadata = parse_metadata(text, where)
    return SampleStore(metadata, folder, _Files(folder, metadata.key))


class SampleStore:
    """A sequence of samples (see the module docstring). Use :func:`open_store`."""

    def __init__(
        self,
        metadata: StoreMetadata,
        folder: str,
        files: _Files,
        *,
        offset: int = 0,
        length: int | None = None,
        split_name: str | None = None,
    ) -> None:
        self.metadata = metadata
        self.folder = folder
        self._files = files
        self._offset = offset
        self._length = metadata.num_samples if length is None else length
        self.split_name = split_name

    open = staticmethod(open_store)

    def __getstate__(self) -> dict[str, Any]:
        # Pickled (DataLoader workers under spawn, Ray tasks): the maps are not data to
        # send; the receiving process maps the files again on first use.
        state = self.__dict__.copy()
        for cached in ("_cache", "_one_split_rows", "_window_parts", "_shard_starts"):
            state.pop(cached, None)
        return state

    def __repr__(self) -> str:
        part = f", split={self.split_name!r}" if self.split_name else ""
        return f"SampleStore({self.folder!r}, kind={self.kind!r}, samples={len(self)}{part})"

    @property
    def kind(self) -> str:
        return self.metadata.kind

    @property
    def key(self) -> str:
        return self.metadata.key

    @property
    def splits(self) -> dict[str, int]:
        return {name: info.count for name, info in self.metadata.splits.items()}

    def __len__(self) -> int:
        return self._length

    def split(self, name: str) -> SampleStore:
        info = self.metadata.splits.get(name)
        if info is None:
            raise StoreError(
                f"the store has no split {name!r}",
                location=self.folder,
                hint=f"its splits are: {', '.join(self.metadata.splits) or '(none)'}",
            )
        view = SampleStore(
            self.metadata,
            self.folder,
            self._files,
            offset=info.start,
            length=info.count,
            split_name=name,
        )
        view._cache = self._cache  # views share the mapped files
        return view

    # files -----------------------------------------------------------------------------
    @cached_property
    def _cache(self) -> dict[str, Any]:
        return {}

    def array(self, name: str) -> np.ndarray:
        """A side array (memory-mapped, read-only)."""
        key = f"array:{name}"
        if key not in self._cache:
            info = self.metadata.arrays.get(name)
            if info is None:
                raise StoreError(
                    f"the store has no array {name!r}",
                    location=self.folder,
                    hint=f"its arrays are: {', '.join(self.metadata.arrays) or '(none)'}",
                )
            path = self._files.path(info.file, info.sha256)
            try:
                array = _map_array(path, info.dtype, info.shape, raw=info.file.endswith(".bin"))
            except (OSError, ValueError) as exc:
                raise StoreError(
                    f"array {name!r} cannot be read: {exc}",
                    location=path,
                    hint="run 'stagewise data verify' and rebuild with --force",
                ) from None
            if list(array.shape) != info.shape or str(array.dtype) != info.dtype:
                raise StoreError(
                    f"array {name!r} is {array.dtype}{list(array.shape)}, metadata says "
                    f"{info.dtype}{info.shape}: the file was changed or damaged",
                    location=path,
                    hint="rebuild the store with 'stagewise data preprocess --force'",
                )
            self._cache[key] = array
        return self._cache[key]  # type: ignore[no-any-return]

    @cached_property
    def _shard_starts(self) -> np.ndarray:
        return np.cumsum([0] + [s.rows for s in self.metadata.shards], dtype=np.int64)

    @cached_property
    def _split_ranges(self) -> list[tuple[str, int, int]]:
        """(split, first sample, end) of the splits this view covers, in sample order."""
        ranges = sorted(
            (info.start, info.start + info.count, name)
            for name, info in self.metadata.splits.items()
            if info.count and (self.split_name is None or name == self.split_name)
        )
        return [(name, a, b) for a, b, name in ranges]

    @cached_property
    def _in_shards(self) -> list[str]:
        return [c.name for c in self.metadata.columns if c.storage == "shard"]

    def _arrays_of(self, split: str) -> list[tuple[str, np.ndarray]]:
        """The fixed-width columns of one split, in column order: contiguous, mapped."""
        key = f"columns:{split}"
        if key not in self._cache:
            self._cache[key] = [
                (c.name, self.array(column_array(split, c.name)))
                for c in self.metadata.columns
                if c.storage == "array"
            ]
        return self._cache[key]  # type: ignore[no-any-return]

    def _shard(self, number: int) -> dict[str, Any]:
        key = f"shard:{number}"
        if key not in self._cache:
            info = self.metadata.shards[number]
            path = self._files.path(info.file, info.sha256)
            try:
                batch = pa.ipc.open_file(pa.memory_map(path, "r")).get_batch(0)
            except (OSError, pa.ArrowException) as exc:
                raise StoreError(
                    f"shard {info.file} cannot be read: {exc}",
                    location=path,
                    hint="run 'stagewise data verify STORE'; rebuild with "
                    "'stagewise data preprocess --force'",
                ) from None
            if batch.num_rows != info.rows:
                raise StoreError(
                    f"shard {info.file} has {batch.num_rows} rows, metadata says {info.rows}",
                    location=path,
                    hint="rebuild the store with 'stagewise data preprocess --force'",
                )
            shapes = {c.name: c.shape for c in self.metadata.columns}
            self._cache[key] = {
                name: _as_numpy(batch.column(name), shapes.get(name, []))
                for name in batch.schema.names
            }
        return self._cache[key]  # type: ignore[no-any-return]

    def column(self, name: str) -> np.ndarray | pa.ChunkedArray:
        """A whole column of this view: numeric and tensor columns as numpy (a view of the
        mapped file, no copy, for one split), others as an Arrow array."""
        info = self._check_column(name)
        if info.storage == "array":
            parts = [dict(self._arrays_of(split))[name] for split, _, _ in self._split_ranges]
            if not parts:
                return np.empty((0, *info.shape))
            return parts[0] if len(parts) == 1 else np.concatenate(parts)
        chunks, lo = [], self._offset
        hi = lo + self._length
        starts = self._shard_starts
        for number in range(len(self.metadata.shards)):
            a, b = int(starts[number]), int(starts[number + 1])
            if b > lo and a < hi:
                chunks.append(self._shard(number)[name][max(lo, a) - a : min(hi, b) - a])
        if chunks and isinstance(chunks[0], np.ndarray):
            return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
        return pa.chunked_array(chunks, type=None if chunks else pa.null())

    def _check_column(self, name: str) -> Any:
        for column in self.metadata.columns:
            if column.name == name:
                return column
        names = ", ".join(c.name for c in self.metadata.columns)
        raise StoreError(
            f"the store has no column {name!r}",
            location=self.folder,
            hint=f"its columns are: {names or '(none)'}",
        )

    # indexing ----------------------------------------------------------------------------
    def _absolute(self, index: int) -> int:
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(f"sample {index} out of range for {self._length} samples")
        return index + self._offset

    def _absolute_many(self, indices: Index) -> np.ndarray:
        if isinstance(indices, slice):
            return np.arange(*indices.indices(self._length), dtype=np.int64) + self._offset
        positions = np.asarray(indices, dtype=np.int64)
        if positions.size and (positions.min() < -self._length or positions.max() >= self._length):
            raise IndexError(f"an index is out of range for {self._length} samples")
        return np.where(positions < 0, positions + self._length, positions) + self._offset

    def __getitem__(self, index: Index) -> dict[str, Any]:
        if isinstance(index, (int, np.integer)):
            i = int(index)
            fast = self._one_split_rows
            if fast is None or not -self._length <= i < self._length:
                return self._row(self._absolute(i))
            # The common case, kept to a few bytecodes: one split, numeric columns only.
            local = (i if i >= 0 else i + self._length) + fast[0]
            return {name: values[local] for name, values in fast[1]}
        return self._gather(self._absolute_many(index))

    @cached_property
    def _one_split_rows(self) -> tuple[int, list[tuple[str, np.ndarray]]] | None:
        """(offset into the split's arrays, the arrays) when this view is one split of a
        table whose columns are all arrays; else None."""
        ranges = self._split_ranges
        if self.metadata.kind != "table" or self._in_shards or len(ranges) != 1:
            return None
        split, lo, _ = ranges[0]
        return self._offset - lo, self._arrays_of(split)

    def take(self, indices: Index) -> dict[str, Any]:
        """A batch: a dict of stacked columns for the given sample indices."""
        return self._gather(self._absolute_many(indices))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(self._length):
            yield self._row(i + self._offset)

    def iter_batches(self, batch_size: int) -> Iterator[dict[str, Any]]:
        """Sequential batches in sample order (the last one may be short). Within one
        split, numeric columns are views of the mapped file: no copy at all."""
        table = self.metadata.kind == "table"
        for start in range(0, self._length, batch_size):
            stop = min(start + batch_size, self._length)
            a, b = start + self._offset, stop + self._offset
            owner = [(n, lo) for n, lo, hi in self._split_ranges if lo <= a and b <= hi]
            if not (table and owner):
                yield self._gather(np.arange(a, b, dtype=np.int64))
                continue
            split, lo = owner[0]
            batch = {name: values[a - lo : b - lo] for name, values in self._arrays_of(split)}
            if self._in_shards:
                batch.update(self._gather_shards(np.arange(a, b, dtype=np.int64)))
                batch = {c.name: batch[c.name] for c in self.metadata.columns}
            yield batch

    def _locate(self, absolute: int) -> tuple[str, int]:
        for split, lo, hi in self._split_ranges:
            if lo <= absolute < hi:
                return split, absolute - lo
        raise IndexError(f"sample {absolute} is in no split")

    def _row(self, absolute: int) -> dict[str, Any]:
        if self.metadata.kind == "windows":
            return self._window(absolute)
        split, local = self._locate(absolute)
        row = {name: values[local] for name, values in self._arrays_of(split)}
        if self._in_shards:
            starts = self._shard_starts
            number = int(np.searchsorted(starts, absolute, "right")) - 1
            at = absolute - int(starts[number])
            for name, values in self._shard(number).items():
                row[name] = values[at] if isinstance(values, np.ndarray) else values[at].as_py()
            row = {c.name: row[c.name] for c in self.metadata.columns}
        return row

    def _gather(self, absolute: np.ndarray) -> dict[str, Any]:
        if self.metadata.kind == "windows":
            return self._windows(absolute)
        ranges = self._split_ranges
        out: dict[str, Any] = {}
        if len(ranges) == 1:
            split, lo, _ = ranges[0]
            local = absolute - lo
            out = {name: values[local] for name, values in self._arrays_of(split)}
        elif ranges:
            owners = np.searchsorted([lo for _, lo, _ in ranges], absolute, "right") - 1
            for number, (split, lo, _) in enumerate(ranges):
                mask = owners == number
                if not mask.any():
                    continue
                for name, values in self._arrays_of(split):
                    if name not in out:
                        out[name] = np.empty((len(absolute), *values.shape[1:]), values.dtype)
                    out[name][mask] = values[absolute[mask] - lo]
        if self._in_shards:
            out.update(self._gather_shards(absolute))
            out = {c.name: out[c.name] for c in self.metadata.columns if c.name in out}
        return out

    def _gather_shards(self, absolute: np.ndarray) -> dict[str, Any]:
        starts = self._shard_starts
        if len(starts) == 2:
            return {
                name: values[absolute]
                if isinstance(values, np.ndarray)
                else values.take(absolute).to_pylist()
                for name, values in self._shard(0).items()
            }
        owners = np.searchsorted(starts, absolute, "right") - 1
        out: dict[str, Any] = {}
        for number in np.unique(owners):
            mask = owners == number
            local = absolute[mask] - starts[number]
            for name, values in self._shard(int(number)).items():
                if isinstance(values, np.ndarray):
                    if name not in out:
                        out[name] = np.empty((len(absolute), *values.shape[1:]), values.dtype)
                    out[name][mask] = values[local]
                else:
                    slots = out.setdefault(name, [None] * len(absolute))
                    for slot, value in zip(
                        np.flatnonzero(mask), values.take(local).to_pylist(), strict=True
                    ):
                        slots[slot] = value
        return out

    # windows -----------------------------------------------------------------------------
    @cached_property
    def _window_parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
        info = self.metadata.windows
        assert info is not None
        return (
            self.array(info.series),
            self.array(info.time_features),
            self.array(info.starts),
            info.input_len,
            info.output_len,
        )

    def _window(self, absolute: int) -> dict[str, Any]:
        series, te, starts, p, q = self._window_parts
        s = int(starts[absolute])
        return {
            "x": series[s : s + p],
            "y": series[s + p : s + p + q],
            "te_x": te[s : s + p],
            "te_y": te[s + p : s + p + q],
            "start": s,
        }

    def _windows(self, absolute: np.ndarray) -> dict[str, Any]:
        series, te, starts, p, q = self._window_parts
        s = np.asarray(starts[absolute], dtype=np.int64)[:, None]
        inputs = s + np.arange(p)
        outputs = s + p + np.arange(q)
        return {
            "x": series[inputs],
            "y": series[outputs],
            "te_x": te[inputs],
            "te_y": te[outputs],
            "start": s[:, 0],
        }


def _map_array(path: str, dtype: str, shape: list[int], *, raw: bool) -> np.ndarray:
    """An ``.npy`` file, or a raw ``.bin`` column file whose dtype and shape come from the
    metadata, memory-mapped read-only."""
    # Plain ndarray views of the maps: np.memmap's subclass hooks cost a microsecond on
    # every index, which is most of the cost of reading one row.
    if not raw:
        return np.load(path, mmap_mode="r", allow_pickle=False).view(np.ndarray)
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    size = os.path.getsize(path)
    if size != expected:
        raise ValueError(f"the file has {size} bytes, metadata implies {expected}")
    if expected == 0:
        return np.empty(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=tuple(shape)).view(np.ndarray)


def _as_numpy(values: pa.Array, shape: list[int]) -> np.ndarray | pa.Array:
    """A numpy view of a fixed-width column (no copy), else the Arrow array."""
    kind = values.type
    if (
        pa.types.is_fixed_size_list(kind)
        and _fixed_width(kind.value_type)
        and values.null_count == 0
    ):
        flat = values.flatten()
        if flat.null_count == 0:
            return flat.to_numpy(zero_copy_only=True).reshape(len(values), *shape)
    if _fixed_width(kind):
        return values.to_numpy(
            zero_copy_only=values.null_count == 0 and not pa.types.is_boolean(kind)
        )
    return values


def _fixed_width(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
