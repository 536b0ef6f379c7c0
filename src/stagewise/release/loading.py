"""Loading what a stage trains on: its datasets opened, its mixture planned, and seed
000's data-loading statistics written.

``load_stage_data(release)`` resolves the stage as a run would (``TRAINING_STAGE``, the
active stage, ...; or the ``stage`` given), opens each enabled dataset, and plans the
mixture from the datasets' real sizes. A dataset's location is a sample store (written by
``stagewise data preprocess``; its ``split`` is used), or a JSONL/CSV/Parquet/Arrow file,
which is read whole into memory (fine for small datasets; preprocess large ones).

Each load appends a ``data_loading`` event to the repo's ``stage_events.jsonl`` (when the
repo is local) in seed 000's shape: ``timestamp``, ``stage``, ``datasets_loaded`` (name,
clips_loaded, weight, load_time), ``total_clips``, ``total_load_time``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stagewise.errors import DataError
from stagewise.release.plan import StagePlan, plan_stage
from stagewise.release.repo import EVENT_LOG, Release, Resolution
from stagewise.store.atomic import append_line

log = logging.getLogger("stagewise.data")
DATA_LOADING_EVENT = "data_loading"


@dataclass
class StageData:
    """A stage's datasets, opened, and the mixture plan over them."""

    resolution: Resolution
    stage_plan: StagePlan
    plan: Any  # stagewise.data.order.MixturePlan
    sources: dict[str, Any]  # name -> SampleStore split or TableSamples
    statistics: dict[str, Any]

    def sampler(self, seed: int, epoch: int = 0, *, rank: int = 0, world_size: int = 1) -> Any:
        from stagewise.data.order import MixtureSampler

        return MixtureSampler(self.plan, seed, epoch, rank=rank, world_size=world_size)


class TableSamples:
    """A small dataset file held in memory, with the store's ``take`` interface."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def take(self, indices: Any) -> dict[str, Any]:
        import numpy as np

        rows = self.table.take(np.asarray(indices, dtype=np.int64))
        out: dict[str, Any] = {}
        for name in rows.column_names:
            column = rows.column(name)
            kind = column.type
            numeric = str(kind).startswith(("int", "uint", "float", "double", "bool"))
            out[name] = (
                column.to_numpy() if numeric and column.null_count == 0 else column.to_pylist()
            )
        return out


def _open_dataset(location: str, split: str) -> Any:
    from stagewise.data.samples import is_store, open_store
    from stagewise.data.sources import open_source

    if is_store(location):  # a folder, or a URL prefix (s3://...)
        store = open_store(location)
        if split not in store.splits:
            raise DataError(
                f"the sample store has no split {split!r}",
                location=location,
                hint=f"its splits are {', '.join(store.splits)}; pass split=...",
            )
        return store.split(split)
    import pyarrow as pa

    source = open_source(location)
    return TableSamples(pa.Table.from_batches(list(source.batches()), schema=source.schema()))


def load_stage_data(
    release: Release,
    stage: str | None = None,
    *,
    variant: str | None = None,
    split: str = "train",
    env: Mapping[str, str] | None = None,
    record: bool = True,
) -> StageData:
    """Open the stage's datasets and plan its mixture (see the module docstring)."""
    from stagewise.data.order import MixturePlan, loading_statistics

    if stage is None:
        resolution = release.resolve(env)
    else:
        definition = release.stage(stage)
        if definition.variants and variant is None:
            variant = next(iter(definition.variants))
        config, shown = release.load_dataset_config(release.stage_config_file(stage, variant))
        resolution = Resolution(config, shown, "TRAINING_STAGE", stage, variant, "asked for")
    config = resolution.config
    began = time.perf_counter()
    sources: dict[str, Any] = {}
    load_times: dict[str, float] = {}
    for entry in config.enabled_datasets:
        started = time.perf_counter()
        location = release.dataset_location(entry.location)
        try:
            sources[entry.name] = _open_dataset(location, split)
        except DataError as exc:
            raise DataError(
                f"dataset {entry.name!r}: {exc.headline}",
                location=exc.location or location,
                hint=exc.hint,
                problems=exc.problems,
            ) from None
        load_times[entry.name] = time.perf_counter() - started
    stage_plan = plan_stage(config, release.dataset_location)
    sizes = {name: len(source) for name, source in sources.items()}
    shuffle = config.stage_config.shuffle is not False
    plan = MixturePlan.from_stage_plan(
        stage_plan, sizes=sizes, shuffle=shuffle, stage=resolution.stage
    )
    statistics = loading_statistics(
        plan,
        load_times,
        stage=resolution.stage,
        total_load_time=time.perf_counter() - began,
    )
    if record:
        record_loading(release, statistics)
    return StageData(resolution, stage_plan, plan, sources, statistics)


def record_loading(release: Release, statistics: Mapping[str, Any]) -> None:
    """Log the statistics, and append them to the repo's event log when it is local."""
    line = json.dumps({"event": DATA_LOADING_EVENT, **statistics}, ensure_ascii=False)
    log.info("data loading statistics: %s", line)
    if release.source.writable and release.root is not None:
        append_line(release.root / EVENT_LOG, line)
