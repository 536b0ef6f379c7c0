"""What a sample store is on disk, and the checks that make a reader refuse a bad one.

A store root holds versions and a pointer to the newest::

    ROOT/LATEST              the name of the current version ("v-<key>"), written atomically
    ROOT/v-<key>/            one complete version, never modified after it is published
        metadata.json        written last: a version without it does not exist for readers
        columns/0000.bin     a fixed-width column (numbers, fixed-size lists of numbers)
                             of one split: raw values, C order, dtype and shape in metadata
        shards/00000.arrow   the other row columns (text, nested): Arrow IPC files with one
                             record batch each, grouped by split
        arrays/<name>.npy    side arrays (a time series, time features, patch indexes)
    ROOT/.tmp-*/             a version being written; readers ignore it

``<key>`` is the cache key: a hash of the source's fingerprint, the transform config and
the format version, so an unchanged preprocess finds its version and a changed one makes a
new version beside the old.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stagewise.errors import StoreError

FORMAT_NAME = "stagewise-samples"
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
LATEST_FILE = "LATEST"
VERSION_PREFIX = "v-"
TEMP_PREFIX = ".tmp-"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ColumnInfo(_Strict):
    name: str
    type: str = Field(description="Arrow type of one value, e.g. float32, int64, string")
    shape: list[int] = Field(default_factory=list, description="tensor shape of one value")
    storage: Literal["array", "shard"] = Field(
        "shard",
        description="array: one contiguous raw file per split (numbers and fixed-size "
        "lists of numbers); shard: in the Arrow IPC shards (text, nested, other types)",
    )


# A version's file names come from metadata.json, which may come from anywhere (a URL):
# only plain names inside the version's own folders are accepted, so that no crafted
# store can make a reader open or create files elsewhere.
SAFE_FILE = r"^(shards|columns|arrays)/[A-Za-z0-9_][A-Za-z0-9_.:=+-]{0,200}$"
SAFE_KEY = r"^[A-Za-z0-9_][A-Za-z0-9_.=+-]{0,200}$"
SHA256 = r"^[0-9a-f]{64}$"


class ShardInfo(_Strict):
    file: str = Field(pattern=SAFE_FILE)
    rows: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=SHA256)


class ArrayInfo(_Strict):
    file: str = Field(pattern=SAFE_FILE)
    dtype: str
    shape: list[int]
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=SHA256)


class SplitInfo(_Strict):
    start: int = Field(ge=0, description="index of the split's first sample")
    count: int = Field(ge=0)


class WindowInfo(_Strict):
    """How a windows store turns sample ``i`` into views of its base series."""

    input_len: int = Field(ge=1)
    output_len: int = Field(ge=0)
    series: str = "series"
    time_features: str = "time_features"
    starts: str = "window_starts"


class StoreMetadata(_Strict):
    format: Literal["stagewise-samples"] = FORMAT_NAME
    format_version: int
    kind: Literal["table", "windows"]
    key: str = Field(pattern=SAFE_KEY)
    created_at: str
    num_samples: int = Field(ge=0)
    columns: list[ColumnInfo] = Field(default_factory=list)
    splits: dict[str, SplitInfo]
    shards: list[ShardInfo] = Field(default_factory=list)
    arrays: dict[str, ArrayInfo] = Field(default_factory=dict)
    windows: WindowInfo | None = None
    source: dict[str, Any] = Field(default_factory=dict)
    transform: dict[str, Any] = Field(default_factory=dict)
    stats: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)


def parse_metadata(text: str | bytes, where: str) -> StoreMetadata:
    """Parse metadata.json, refusing a truncated file, a newer format or a wrong shape."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise StoreError(
            f"metadata.json is not valid JSON ({exc}): the store is incomplete or damaged",
            location=where,
            hint="re-run 'stagewise data preprocess' for this store (add --force to rebuild)",
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise StoreError(
            f"this is not a stagewise sample store (metadata.json has no 'format: {FORMAT_NAME}')",
            location=where,
            hint="point at a folder written by 'stagewise data preprocess'",
        )
    version = raw.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise StoreError(
            f"the store has format version {version}; this stagewise reads up to {FORMAT_VERSION}",
            location=where,
            hint="upgrade stagewise (pip install -U stagewise), or rebuild the store with this one",
        )
    try:
        return StoreMetadata.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise StoreError(
            f"metadata.json is malformed at '{key}': {first['msg']}",
            location=where,
            hint="re-run 'stagewise data preprocess' for this store (add --force to rebuild)",
        ) from None
