"""Preprocess once: a source, through a transform, into a new version of a sample store.

The cache key of a version is a hash of the store format version, the source's
fingerprint (and the node metadata's), and the settings that change the samples (not
``batch_size``, which only changes memory use). Preprocessing again with the same key
finds the published version and only moves LATEST to it: the cost of reading one
metadata file. ``force`` rebuilds it.

Reading runs on a second thread (Arrow decodes with the GIL released) while this thread
scatters the records, so a preprocess uses two cores; memory stays bounded by a few
chunks of ``batch_size`` records plus the output series itself, which is written in place
into the store's file.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stagewise.config.preprocess import PreprocessConfig, TimeSeriesSettings, freq_seconds
from stagewise.data import spatial, timeseries
from stagewise.data.samples.format import (
    FORMAT_VERSION,
    METADATA_FILE,
    VERSION_PREFIX,
    SplitInfo,
    WindowInfo,
)
from stagewise.data.samples.store import SampleStore, open_store
from stagewise.data.samples.writer import StoreWriter
from stagewise.data.sources import JsonlListSource, Source, open_source, read_jsonl_list
from stagewise.errors import ConfigError, DataError
from stagewise.store import atomic, locations

# Bumped when preprocessing itself changes what it writes for the same input and settings
# (a fix), so that stores built by the older code are not served from the cache.
PIPELINE_VERSION = 2

Progress = Callable[[int], None]  # called with the number of records read so far


@dataclass
class PreprocessResult:
    store: SampleStore
    cached: bool
    seconds: float
    records: int = 0
    skipped: int = 0
    first_errors: list[str] = field(default_factory=list)


def cache_key(config: PreprocessConfig, source: Source, meta: Source | None) -> str:
    settings = config.model_dump(mode="json", exclude={"output", "batch_size", "source"})
    if config.transform not in ("timeseries", "none"):
        settings["transform_code"] = _function_source(config.transform)
    if config.transform != "timeseries":
        settings.pop("timeseries", None)
    material = {
        "format_version": FORMAT_VERSION,
        "pipeline_version": PIPELINE_VERSION,
        "source": source.fingerprint(),
        "meta": meta.fingerprint() if meta is not None else None,
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]


def published_version(root: Path, key: str) -> Path | None:
    """The newest published version folder of ``key`` (a forced rebuild adds ``-r<time>``)."""
    found = [root / f"{VERSION_PREFIX}{key}", *root.glob(f"{VERSION_PREFIX}{key}-r*")]
    found = [p for p in found if (p / METADATA_FILE).exists()]
    return max(found, key=lambda p: p.name) if found else None


def preprocess(
    config: PreprocessConfig, *, force: bool = False, progress: Progress | None = None
) -> PreprocessResult:
    """Build (or find in the cache) the store version for ``config``."""
    began = time.perf_counter()
    if locations.is_url(config.output):
        raise ConfigError(
            "preprocess writes local stores only in this version",
            location="output",
            hint="write the store to a local folder, then copy it to object storage; "
            "readers open it from the URL",
        )
    if isinstance(config.source, list):
        source: Source = read_jsonl_list(
            config.source, missing=config.missing_files, on_error=config.on_error
        )
    else:
        source = open_source(
            config.source,
            format=config.format,
            on_error=config.on_error,
            query=config.query,
            table=config.table,
        )
    settings = config.timeseries
    meta = (
        open_source(settings.meta, on_error="raise")
        if config.transform == "timeseries" and settings.meta
        else None
    )
    key = cache_key(config, source, meta)
    root = Path(locations.local_path(config.output))
    version = published_version(root, key)
    if not force and version is not None:
        latest = root / "LATEST"
        if not latest.exists() or latest.read_text().strip() != version.name:
            atomic.atomic_write(latest, version.name + "\n")
        return PreprocessResult(open_store(str(root)), True, time.perf_counter() - began)
    kind = "table" if config.transform != "timeseries" else "windows"
    with StoreWriter(root, key, kind=kind, replace=force) as writer:
        if config.transform == "timeseries":
            result = _timeseries(config, settings, source, meta, writer, progress)
        else:
            result = _rows(config, source, writer, progress)
    result.store = open_store(str(root))
    result.seconds = time.perf_counter() - began
    return result


def _prefetch(batches: Iterator[pa.RecordBatch], depth: int = 2) -> Iterator[pa.RecordBatch]:
    """Read the next batches on another thread while the caller works on this one."""
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    return
                slots.put(batch)
            slots.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            slots.put(exc)

    worker = threading.Thread(target=produce, name="stagewise-read", daemon=True)
    worker.start()
    try:
        while (item := slots.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                slots.get_nowait()
            except queue.Empty:
                worker.join(0.01)


def _source_info(source: Source) -> dict[str, Any]:
    return {"description": source.description, "fingerprint": source.fingerprint()}


# rows --------------------------------------------------------------------------------------
def _function_source(spec: str) -> str:
    function = load_function(spec)
    try:
        return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()
    except (OSError, TypeError):
        return spec


def load_function(spec: str) -> Callable[[pa.RecordBatch], Any]:
    """``module:function`` as a callable."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ConfigError(
            f"transform {spec!r} is not 'timeseries', 'none' or 'module:function'",
            location="transform",
            hint="for your own transform write e.g. mypackage.prep:clean_batch",
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import module {module_name!r} of transform {spec!r}: {exc}",
            location="transform",
            hint="make the module importable (installed, or on PYTHONPATH)",
        ) from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(
            f"module {module_name!r} has no function {name!r}",
            location="transform",
            hint="check the name after the colon",
        )
    return function  # type: ignore[no-any-return]


def _rows(
    config: PreprocessConfig, source: Source, writer: StoreWriter, progress: Progress | None
) -> PreprocessResult:
    function = None if config.transform == "none" else load_function(config.transform)
    records = 0
    for batch in _prefetch(source.batches(config.batch_size)):
        records += batch.num_rows
        out = batch if function is None else function(batch)
        if out is None:
            continue
        if isinstance(out, pa.Table):
            out = out.combine_chunks()
        if not isinstance(out, pa.RecordBatch | pa.Table):
            raise DataError(
                f"transform {config.transform!r} returned {type(out).__name__}, "
                "expected a pyarrow RecordBatch or Table",
                hint="return a pyarrow.RecordBatch (or None to drop the batch)",
            )
        _add_rows(writer, out, config.split_column)
        if progress:
            progress(records)
    stats: dict[str, Any] = {"records": records, "skipped": source.report.skipped}
    if isinstance(source, JsonlListSource):
        stats["dataset_counts"] = source.dataset_counts()
        stats["missing_files"] = list(source.report.missing)
    writer.commit(
        source=_source_info(source),
        transform=config.model_dump(mode="json", exclude={"timeseries"}),
        stats=stats,
    )
    return PreprocessResult(
        None,  # type: ignore[arg-type]  # filled by the caller
        False,
        0.0,
        records,
        source.report.skipped,
        list(source.report.first_errors),
    )


def _add_rows(
    writer: StoreWriter, batch: pa.RecordBatch | pa.Table, split_column: str | None
) -> None:
    if split_column is None:
        writer.add_batch(batch)
        return
    if split_column not in batch.schema.names:
        raise ConfigError(
            f"split_column {split_column!r} is not a column of the records",
            location="split_column",
            hint=f"the columns are: {', '.join(batch.schema.names)}",
        )
    labels = batch.column(split_column)
    for name in pc.unique(labels).to_pylist():
        if name is None:
            raise DataError(
                f"a record has no value in split_column {split_column!r}",
                hint="give every record a split (train, val, test...)",
            )
        writer.add_batch(batch.filter(pc.equal(labels, name)), str(name))


# time series -------------------------------------------------------------------------------
def _node_table(meta: Source, settings: TimeSeriesSettings) -> tuple[pa.Array, np.ndarray]:
    columns = [settings.node_column, settings.lat_column, settings.lng_column]
    table = pa.Table.from_batches(list(meta.batches(65_536)))
    missing = [c for c in columns if c not in table.schema.names]
    if missing:
        raise DataError(
            f"the node metadata has no column {', '.join(map(repr, missing))}",
            location=meta.description,
            hint=f"its columns are {', '.join(table.schema.names)}; set node_column, "
            "lat_column and lng_column",
        )
    table = table.sort_by(settings.node_column)
    ids = table.column(settings.node_column).combine_chunks()
    if ids.null_count:
        raise DataError("a node in the metadata has no id", location=meta.description)
    if len(pc.unique(ids)) != len(ids):
        counts = pc.value_counts(ids).to_pylist()
        twice = [c["values"] for c in counts if c["counts"] > 1][:5]
        raise DataError(
            f"node ids appear more than once in the metadata: {twice}",
            location=meta.description,
            hint="keep one row per node",
        )
    lat = table.column(settings.lat_column).combine_chunks()
    lng = table.column(settings.lng_column).combine_chunks()
    no_coords = pc.or_(lat.is_null(), lng.is_null())
    if pc.any(no_coords).as_py():
        nodes = ids.filter(no_coords).to_pylist()
        raise DataError(
            f"{len(nodes)} node(s) have no coordinates in the metadata: "
            f"{nodes[:5]}{' ...' if len(nodes) > 5 else ''}",
            location=meta.description,
            hint="fill their lat/lng, or remove the nodes (and their records)",
        )
    coords = np.column_stack(
        [lat.to_numpy(zero_copy_only=False), lng.to_numpy(zero_copy_only=False)]
    ).astype(np.float64)
    return ids, coords


def _check_columns(source: Source, names: list[str]) -> None:
    have = source.schema().names
    missing = [n for n in names if n not in have]
    if missing:
        raise DataError(
            f"the records have no column {', '.join(map(repr, missing))}",
            location=source.description,
            hint=f"their columns are {', '.join(have)}; set node_column, time_column and "
            "value_columns under timeseries:",
        )


def splits_of(steps: int, settings: TimeSeriesSettings) -> list[timeseries.SplitWindows]:
    ratios = {"train": settings.train_ratio, "val": settings.val_ratio, "test": settings.test_ratio}
    return timeseries.chronological_splits(steps, ratios, settings.input_len, settings.output_len)


def _timeseries(
    config: PreprocessConfig,
    settings: TimeSeriesSettings,
    source: Source,
    meta: Source | None,
    writer: StoreWriter,
    progress: Progress | None,
) -> PreprocessResult:
    _check_columns(source, [settings.node_column, settings.time_column, *settings.value_columns])
    chunk = config.batch_size
    coords = None
    if meta is not None:
        node_ids, coords = _node_table(meta, settings)
    start = timeseries.parse_date(settings.start_date) if settings.start_date else None
    end = timeseries.parse_date(settings.end_date, end=True) if settings.end_date else None
    if start is not None and end is not None and start > end:
        raise ConfigError(
            f"start_date {settings.start_date} is after end_date {settings.end_date}",
            location="timeseries.start_date",
            hint="swap the dates",
        )
    freq = freq_seconds(settings.freq) if settings.freq is not None else None
    if start is None or end is None or freq is None or meta is None:
        scan_columns = [settings.time_column] + ([] if meta else [settings.node_column])
        seen_nodes: list[pa.Array] = []

        def time_batches() -> Iterator[pa.RecordBatch]:
            for batch in source.batches(chunk, columns=scan_columns):
                if meta is None:
                    seen_nodes.append(pc.unique(batch.column(settings.node_column)))
                yield batch

        scan = timeseries.scan_times(time_batches(), settings.time_column, step=freq is None)
        start = scan.first if start is None else start
        end = scan.last if end is None else end
        if freq is None:
            if scan.step == 0:
                raise DataError(
                    "cannot tell the series' step: every record has the same time",
                    location=source.description,
                    hint="set timeseries.freq (e.g. 5min)",
                )
            freq = scan.step
        if meta is None:
            node_ids = pc.unique(pa.chunked_array(seen_nodes).combine_chunks()).sort()
    steps = (end - start) // freq + 1
    splits = splits_of(steps, settings)  # before the long part: too short fails at once
    nodes = len(node_ids)
    features = len(settings.value_columns)
    series = writer.new_array("series", (steps, nodes, features), np.float32)
    builder = timeseries.SeriesBuilder(
        series,
        node_ids,
        start=start,
        freq=freq,
        node_column=settings.node_column,
        time_column=settings.time_column,
        value_columns=settings.value_columns,
        on_error=config.on_error,
        require_sorted=settings.require_sorted,
    )
    columns = [settings.node_column, settings.time_column, *settings.value_columns]
    for batch in _prefetch(source.batches(chunk, columns=columns)):
        builder.add(batch)
        if progress:
            progress(builder.records)
    builder.mark_missing()
    normalization = timeseries.train_statistics(series, splits[0])  # observed values only
    missing = builder.fill(settings.missing)
    writer.release_pages("series")
    starts = timeseries.window_starts(splits)
    writer.add_array("window_starts", starts)
    writer.add_array("time_features", timeseries.time_features(start, steps, freq))
    ids = node_ids.to_numpy(zero_copy_only=False)
    if ids.dtype == object:  # text ids: fixed-width unicode, which a reader can map
        ids = np.asarray(node_ids.to_pylist(), dtype=str)
    writer.add_array("node_ids", ids)
    patches: dict[str, Any] = {"enabled": False}
    if coords is not None and settings.patch_size > 0:
        layout = spatial.patch_layout(coords, settings.patch_size)
        for name, values in layout.items():
            writer.add_array(name, values)
        leaves = 2 ** spatial.depth_for(nodes, settings.patch_size)
        patches = {
            "enabled": True,
            "patches": leaves,
            "patch_size": len(layout["patch_order"]) // leaves,
        }
    if coords is not None:
        writer.add_array("coordinates", coords)
    split_infos, offset = {}, 0
    for part in splits:
        split_infos[part.name] = SplitInfo(start=offset, count=part.windows)
        offset += part.windows
    stats = {
        "records": builder.records,
        "skipped": builder.skipped + source.report.skipped,
        "outside_date_range": builder.outside,
        "missing_cells": missing,
        "steps": steps,
        "nodes": nodes,
        "features": features,
        "freq_seconds": freq,
        "start": timeseries.format_time(start),
        "end": timeseries.format_time(start + (steps - 1) * freq),
        "split_steps": {p.name: {"first_step": p.first_step, "steps": p.steps} for p in splits},
        "normalization": normalization,
        "patches": patches,
    }
    writer.commit(
        num_samples=len(starts),
        splits=split_infos,
        windows=WindowInfo(input_len=settings.input_len, output_len=settings.output_len),
        source={
            **_source_info(source),
            "meta": _source_info(meta) if meta is not None else None,
        },
        transform=config.model_dump(mode="json"),
        stats=stats,
    )
    return PreprocessResult(
        None,  # type: ignore[arg-type]  # filled by the caller
        False,
        0.0,
        builder.records,
        stats["skipped"],
        builder.first_errors + list(source.report.first_errors),
    )
