"""Seed 004's time-series samples: raw readings -> an aligned series -> windows and splits.

**Alignment.** Records ``(node, timestamp, value...)`` arrive in any order. Each goes to
the cell ``(step, node)`` of a ``(time, node, feature)`` float32 series, where ``step =
(timestamp - start) / freq`` and ``node`` is the node's row in the metadata table (sorted
by node id). This is a scatter, O(records), with no sort. A timestamp off the step grid, a
node missing from the metadata, or two readings for one cell is an error naming the
record; records outside ``[start_date, end_date]`` are left out and counted.

**Missing readings** (cells no record filled) become 0 (``missing: zero``, the seed's null
value that its metrics mask), NaN, or the node's previous reading (``ffill``; 0 before the
first). Their count is in the store's stats.

**Time features** ``TE`` have shape ``(T, 2)``: time of day as the step within the day
(``(seconds of day) // freq``) and day of week (Monday = 0), read from the timestamps as
written (no time-zone conversion).

**Splits** are chronological over steps: train is the first ``round(train_ratio * T)``
steps, test the last ``round(test_ratio * T)``, validation the steps between. Windows
are built inside each split, so no window crosses a split border: a split of ``T_s`` steps
has ``T_s - input_len - output_len + 1`` windows, sample ``i`` starting at step
``window_starts[i]``. This is PatchSTG's published loader (21,001 / 6,985 / 6,985 windows
on SD). Normalisation statistics (mean, std) come from the observed training steps.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stagewise.errors import DataError

SPLITS = ("train", "val", "test")


def parse_date(text: str, *, end: bool = False) -> int:
    """Seconds since the epoch of YYYYMMDD or YYYY-MM-DD[ HH:MM[:SS]]. A bare day given as
    the end means the end of that day."""
    try:
        if len(text) == 8 and text.isdigit():
            moment = dt.datetime.strptime(text, "%Y%m%d")
            bare = True
        else:
            moment = dt.datetime.fromisoformat(text)
            bare = len(text) == 10
    except ValueError:
        raise DataError(
            f"cannot read the date {text!r}", hint="write YYYYMMDD or YYYY-MM-DD[ HH:MM]"
        ) from None
    seconds = int(moment.replace(tzinfo=dt.UTC).timestamp())
    return seconds + 86_399 if end and bare else seconds


def format_time(seconds: int) -> str:
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def to_seconds(values: pa.Array | pa.ChunkedArray, column: str) -> np.ndarray:
    """A time column as int64 seconds of wall-clock time: Arrow timestamps and dates (a
    time-zone-aware timestamp is read as the local time it shows in its zone), ISO text, or
    integers since the epoch in seconds, milliseconds or microseconds (told apart by
    magnitude: above 1e11 is milliseconds, above 1e14 microseconds, which puts seconds
    past the year 5138 and milliseconds before 1973 out of reach)."""
    kind = values.type
    try:
        if pa.types.is_timestamp(kind) and kind.tz is not None:
            values = pc.local_timestamp(values)
            kind = values.type
        if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
            values = pc.cast(values, pa.timestamp("s"), safe=False)
            values = pc.cast(values, pa.int64())
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            values = pc.cast(pc.cast(values, pa.timestamp("s")), pa.int64())
        elif pa.types.is_integer(kind):
            values = pc.cast(values, pa.int64())
        elif pa.types.is_floating(kind):
            values = pc.cast(values, pa.int64(), safe=True)
        else:
            raise pa.ArrowInvalid(f"type {kind}")
    except pa.ArrowException as exc:
        raise DataError(
            f"the time column {column!r} cannot be read as times: {exc}",
            hint="use an Arrow timestamp, ISO text (2025-09-19 08:00:00) or Unix seconds",
        ) from None
    if values.null_count:
        raise DataError(
            f"the time column {column!r} has {values.null_count} empty values",
            hint="drop records without a time, or preprocess with on_error: skip",
        )
    seconds = np.asarray(values.to_numpy(), dtype=np.int64)
    if pa.types.is_integer(kind) and seconds.size:
        largest = int(np.abs(seconds).max())
        if largest > 10**14:
            seconds = seconds // 1_000_000
        elif largest > 10**11:
            seconds = seconds // 1000
    return seconds


@dataclass
class TimeScan:
    first: int
    last: int
    step: int  # greatest common divisor of the gaps between distinct times (0: one time)
    records: int


def scan_times(batches: Iterable[pa.RecordBatch], column: str, *, step: bool = True) -> TimeScan:
    """First, last and (unless ``step`` is false) grid step of a time column, reading that
    column only."""
    first, last, found, records = None, None, 0, 0
    find_step = step
    for batch in batches:
        if batch.num_rows == 0:
            continue
        seconds = to_seconds(batch.column(column), column)
        records += len(seconds)
        lo, hi = int(seconds.min()), int(seconds.max())
        if find_step and first is not None and lo < first:
            found = math.gcd(found, first - lo)  # offsets so far were from the old first
        first = lo if first is None else min(first, lo)
        last = hi if last is None else max(last, hi)
        if find_step:
            # Gaps measured from the first time seen keep the gcd exact across batches.
            offsets = np.unique(seconds - first)
            found = math.gcd(found, int(np.gcd.reduce(offsets))) if offsets.size else found
    if first is None or last is None:
        raise DataError("the source has no records", hint="check the source path and filters")
    return TimeScan(first, last, found, records)


class SeriesBuilder:
    """Fills a ``(steps, nodes, features)`` array from record batches (a scatter)."""

    def __init__(
        self,
        target: np.ndarray,
        node_ids: pa.Array,
        *,
        start: int,
        freq: int,
        node_column: str,
        time_column: str,
        value_columns: list[str],
        on_error: str = "raise",
        require_sorted: bool = False,
    ) -> None:
        self.series = target
        self.require_sorted = require_sorted
        self.last_time: int | None = None
        self.steps, self.nodes, self.features = target.shape
        self.node_ids = node_ids
        self.start, self.freq = start, freq
        self.node_column, self.time_column = node_column, time_column
        self.value_columns = value_columns
        self.on_error = on_error
        # The record number (from 1) that filled each cell: finds duplicates across and
        # within batches in two vector operations, and is the missing-value mask.
        self.owner = np.zeros(self.steps * self.nodes, dtype=np.uint32)
        self.records = 0
        self.outside = 0
        self.skipped = 0
        self.first_errors: list[str] = []

    def _bad(self, message: str, hint: str, count: int = 1) -> None:
        if self.on_error == "raise":
            raise DataError(message, hint=hint + " (or preprocess with on_error: skip)")
        self.skipped += count
        if len(self.first_errors) < 5:
            self.first_errors.append(message)

    def add(self, batch: pa.RecordBatch) -> None:
        base = self.records
        n = batch.num_rows
        self.records += n
        if n == 0:
            return
        numbers = np.arange(base + 1, base + n + 1, dtype=np.uint32)
        seconds = to_seconds(batch.column(self.time_column), self.time_column)
        if self.require_sorted:
            self._check_order(seconds, base)
        offsets = seconds - self.start
        step = offsets // self.freq
        keep = (offsets >= 0) & (step < self.steps)
        self.outside += int(n - np.count_nonzero(keep))
        off_grid = keep & (offsets % self.freq != 0)
        if off_grid.any():
            i = int(np.flatnonzero(off_grid)[0])
            self._bad(
                f"record {base + i + 1}: time {format_time(seconds[i])} is not on the "
                f"{self.freq}s grid that starts at {format_time(self.start)}",
                "set freq to the readings' real step, or resample the records",
                int(np.count_nonzero(off_grid)),
            )
            keep &= ~off_grid
        node_index = pc.index_in(self._node_column(batch), value_set=self.node_ids)
        unknown = keep & np.asarray(node_index.is_null().to_numpy(zero_copy_only=False))
        if unknown.any():
            i = int(np.flatnonzero(unknown)[0])
            node = batch.column(self.node_column)[i].as_py()
            self._bad(
                f"record {base + i + 1}: node {node!r} has no entry (no coordinates) in "
                "the node metadata",
                "add the node to the metadata table, or drop its records",
                int(np.count_nonzero(unknown)),
            )
            keep &= ~unknown
        rows = np.flatnonzero(keep)
        nodes = np.asarray(node_index.fill_null(0).to_numpy(zero_copy_only=False))[rows]
        cells = step[rows] * self.nodes + nodes
        mine = numbers[rows]
        earlier = self.owner[cells]
        # Written in reverse, so that within a batch the first reading of a cell wins and
        # the later ones are the duplicates.
        self.owner[cells[::-1]] = mine[::-1]
        clash = (earlier != 0) | (self.owner[cells] != mine)
        if clash.any():
            k = int(np.flatnonzero(clash)[0])
            i = int(rows[k])
            first = int(earlier[k] or self.owner[cells[k]])
            node = batch.column(self.node_column)[i].as_py()
            self._bad(
                f"record {base + i + 1}: a second reading for node {node!r} at "
                f"{format_time(seconds[i])} (duplicate timestamp; record {first} has the first)",
                "remove duplicate records",
                int(np.count_nonzero(clash)),
            )
            if (earlier[clash] != 0).any():  # cells owned by an earlier batch stay theirs
                owned = clash & (earlier != 0)
                self.owner[cells[owned]] = earlier[owned]
            rows, cells = rows[~clash], cells[~clash]
        values = np.empty((len(rows), self.features), dtype=np.float32)
        for f, name in enumerate(self.value_columns):
            column = batch.column(name).take(pa.array(rows))
            values[:, f] = column.to_numpy(zero_copy_only=False)
        flat = self.series.reshape(self.steps * self.nodes, self.features)
        flat[cells] = values

    def _node_column(self, batch: pa.RecordBatch) -> pa.Array:
        """The records' node ids, in the metadata ids' type (a CSV reads ids as integers
        where JSON gave text, say)."""
        column = batch.column(self.node_column)
        if column.type == self.node_ids.type:
            return column
        try:
            return pc.cast(column, self.node_ids.type)
        except (pa.ArrowException, TypeError):
            raise DataError(
                f"the node ids of the records ({column.type}, e.g. {column[0].as_py()!r}) "
                f"cannot be matched with the node metadata's ({self.node_ids.type}, e.g. "
                f"{self.node_ids[0].as_py()!r})",
                hint="write the node ids the same way in both tables",
            ) from None

    def _check_order(self, seconds: np.ndarray, base: int) -> None:
        previous = np.empty_like(seconds)
        previous[1:] = seconds[:-1]
        previous[0] = seconds[0] if self.last_time is None else self.last_time
        backwards = seconds < previous
        if backwards.any():
            i = int(np.flatnonzero(backwards)[0])
            raise DataError(
                f"record {base + i + 1}: time {format_time(seconds[i])} comes after "
                f"{format_time(previous[i])}: the records are out of time order",
                hint="sort the records by time, or set require_sorted: false (any order "
                "is aligned correctly then)",
            )
        self.last_time = int(seconds[-1])

    def mark_missing(self) -> None:
        """Cells no record reached become NaN, like null readings; the record index goes."""
        empty = (self.owner == 0).reshape(self.steps, self.nodes)
        self.series[empty] = np.nan
        self.owner = np.zeros(0, dtype=np.uint32)

    def fill(self, missing: str) -> int:
        """Apply the missing-value policy to every NaN value; return how many there were."""
        flat = self.series.reshape(self.steps, self.nodes * self.features)
        empty = np.isnan(flat)
        count = int(np.count_nonzero(empty))
        if count and missing == "zero":
            flat[empty] = 0.0
        elif count and missing == "ffill":  # each missing value takes its last observed one
            filled_at = np.where(~empty, np.arange(self.steps, dtype=np.int32)[:, None], -1)
            np.maximum.accumulate(filled_at, axis=0, out=filled_at)
            columns = np.broadcast_to(np.arange(flat.shape[1]), flat.shape)
            values = flat[np.maximum(filled_at, 0), columns]
            values[filled_at < 0] = 0.0
            flat[empty] = values[empty]
        return count

    def finish(self, missing: str) -> int:
        """Mark and fill the missing values; return how many there were."""
        self.mark_missing()
        return self.fill(missing)


def time_features(start: int, steps: int, freq: int) -> np.ndarray:
    """``(T, 2)`` int32: step of the day, day of week (Monday = 0)."""
    seconds = start + np.arange(steps, dtype=np.int64) * freq
    features = np.empty((steps, 2), dtype=np.int32)
    features[:, 0] = (seconds % 86_400) // freq
    features[:, 1] = (seconds // 86_400 + 3) % 7  # 1970-01-01 was a Thursday
    return features


@dataclass(frozen=True)
class SplitWindows:
    name: str
    first_step: int
    steps: int
    windows: int


def chronological_splits(
    steps: int, ratios: dict[str, float], input_len: int, output_len: int
) -> list[SplitWindows]:
    """Step ranges and window counts of each split (see the module docstring)."""
    # Cut at cumulative boundaries, so that no split can be negative or overlap another.
    train = min(round(ratios["train"] * steps), steps)
    test = min(round(ratios["test"] * steps), steps - train)
    sizes = {"train": train, "val": steps - train - test, "test": test}
    span = input_len + output_len
    result, first = [], 0
    for name in SPLITS:
        size = sizes[name]
        windows = max(size - span + 1, 0)
        if ratios[name] > 0 and windows == 0:
            raise DataError(
                f"the {name} split has {size} steps, fewer than one window "
                f"(input_len {input_len} + output_len {output_len} = {span} steps)",
                hint="use a longer date range, shorter windows, or a larger "
                f"{name}_ratio (the series has {steps} steps)",
            )
        result.append(SplitWindows(name, first, size, windows))
        first += size
    return result


def window_starts(splits: list[SplitWindows]) -> np.ndarray:
    return np.concatenate(
        [np.arange(s.first_step, s.first_step + s.windows, dtype=np.int64) for s in splits]
    )


def train_statistics(
    series: np.ndarray, split: SplitWindows, block: int = 1024
) -> dict[str, list[float]]:
    """Per-feature mean and std of the training steps, NaN (missing) left out. Summed in
    blocks of steps, so that no float64 copy of the whole split is made."""
    features = series.shape[-1]
    count = np.zeros(features)
    total = np.zeros(features)
    squares = np.zeros(features)
    for first in range(split.first_step, split.first_step + split.steps, block):
        last = min(first + block, split.first_step + split.steps)
        part = series[first:last].reshape(-1, features).astype(np.float64)
        seen = ~np.isnan(part)
        part[~seen] = 0.0
        count += seen.sum(axis=0)
        total += part.sum(axis=0)
        squares += (part * part).sum(axis=0)
    with np.errstate(all="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        variance = np.where(count > 0, squares / np.maximum(count, 1) - mean * mean, 1.0)
    std = np.sqrt(np.maximum(variance, 0.0))
    return {"mean": [float(x) for x in mean], "std": [float(x) for x in std]}
