"""The trainer's data: every dataset's records, checked before the first step, and batches.

Data comes from JSONL files (seed 003: one record per line, with ``label`` and
``dataset_name``), from sample stores, or from a data release repo's stage. Each dataset
becomes a :class:`Table` with ``take(indices)``; the order of an epoch is a
:class:`~stagewise.data.order.MixtureSampler` over a plan of the tables, so it is seeded,
resumable mid-epoch and split across ranks exactly like any stagewise mixture.

Every record is checked before training starts, and all problems are reported at once,
each with its file and line: malformed JSON, a missing label or dataset name, a dataset
with no ``dataset_configs`` entry, a label outside ``0..num_classes-1`` or beyond
``model.num_labels``, inputs whose shape differs from the dataset's other records.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stagewise.config.training import TrainConfig
from stagewise.data.order import MixturePlan, MixtureSampler
from stagewise.errors import DataError, Problem
from stagewise.models.batch import Batch, DatasetSpec, Group

log = logging.getLogger("stagewise.train")
MAX_PROBLEMS = 20  # reported at once; more are counted
# Record keys that describe a record rather than feed the model.
DESCRIPTIVE = {"id", "image_path", "description", "text", "split"}


@dataclass
class Table:
    """One dataset's records of one split: model inputs, targets and where each came from."""

    name: str
    inputs: dict[str, np.ndarray]
    targets: np.ndarray
    origins: list[str] = field(default_factory=list)  # "file:line" per record

    def __len__(self) -> int:
        return len(self.targets)

    def take(self, indices: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        return {k: v[indices] for k, v in self.inputs.items()}, self.targets[indices]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape[1:]) for k, v in self.inputs.items()}

    def subset(self, indices: np.ndarray) -> Table:
        return Table(
            self.name,
            {k: v[indices] for k, v in self.inputs.items()},
            self.targets[indices],
            [self.origins[i] for i in indices] if self.origins else [],
        )


@dataclass
class Split:
    """The tables of one split, in the run's dataset order."""

    tables: dict[str, Table]

    @property
    def total(self) -> int:
        return sum(len(t) for t in self.tables.values())


# ----------------------------------------------------------------------------- reading


class _Collector:
    """Records of one split, grouped by dataset, with every problem found on the way."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.rows: dict[str, dict[str, list[Any]]] = {}
        self.labels: dict[str, list[Any]] = {}
        self.origins: dict[str, list[str]] = {}
        self.shapes: dict[tuple[str, str], tuple[tuple[int, ...], str]] = {}
        self.problems: list[Problem] = []
        self.dropped = 0

    def problem(self, message: str, file: str, line: int | None, hint: str | None) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(message, file=file, line=line, hint=hint))
        else:
            self.dropped += 1

    def add(self, record: Any, file: str, line: int) -> None:
        data = self.config.data
        if not isinstance(record, dict):
            self.problem("expected a JSON object per line", file, line, None)
            return
        name = record.get(data.dataset_key)
        if not isinstance(name, str) or not name:
            self.problem(
                f"the record has no '{data.dataset_key}'",
                file,
                line,
                f'add "{data.dataset_key}": "<one of the datasets.dataset_configs>"',
            )
            return
        settings = self.config.datasets.dataset_configs.get(name)
        if settings is None:
            known = ", ".join(self.config.datasets.dataset_configs)
            self.problem(
                f"dataset {name!r} has no entry in datasets.dataset_configs",
                file,
                line,
                f"add {name} under datasets.dataset_configs (known: {known}), or drop its records",
            )
            return
        if settings.num_classes is None:
            self.problem(
                f"dataset {name!r} has no num_classes, so its records cannot be labelled "
                "classification records",
                file,
                line,
                f"set datasets.dataset_configs.{name}.num_classes; a forecasting model reads "
                "windowed sample stores (data.train_stores), not JSONL",
            )
            return
        label = record.get(data.label_key)
        if isinstance(label, bool) or not isinstance(label, int):
            self.problem(
                f"the label is {label!r}; expected an integer class number",
                file,
                line,
                f"labels of {name} run 0..{settings.num_classes - 1}",
            )
            return
        limit = min(settings.num_classes, self.config.model.num_labels)
        if not 0 <= label < limit:
            self.problem(
                f"label {label} is out of range for dataset {name!r} "
                f"(num_classes {settings.num_classes}, model.num_labels "
                f"{self.config.model.num_labels})",
                file,
                line,
                f"labels of {name} must be 0..{limit - 1}: fix the label, or raise "
                f"datasets.dataset_configs.{name}.num_classes",
            )
            return
        columns = self.rows.setdefault(name, {})
        values: dict[str, Any] = {}
        for key, value in record.items():
            if key in (data.label_key, data.dataset_key) or key in DESCRIPTIVE:
                continue
            array = np.asarray(value)
            if array.dtype.kind not in "biuf":
                continue  # not a model input (a name, a path, ...)
            kind = "f" if array.dtype.kind == "f" else "i"
            if kind == "f" and not np.isfinite(array).all():
                self.problem(
                    f"'{key}' holds a value that is not a finite number (NaN or Infinity)",
                    file,
                    line,
                    "fix or drop the record: a non-finite input poisons the dataset's "
                    "feature scaling",
                )
                return
            seen = self.shapes.setdefault((name, key), (array.shape, kind))
            if kind == "f" and seen[1] == "i":  # a float after whole numbers: keep floats
                seen = self.shapes[(name, key)] = (seen[0], "f")
            if seen[0] != array.shape:
                self.problem(
                    f"'{key}' has shape {list(array.shape)} here but {list(seen[0])} in "
                    f"dataset {name!r}'s earlier records",
                    file,
                    line,
                    "every record of one dataset needs the same input shape",
                )
                return
            values[key] = array
        if columns and values.keys() != columns.keys():
            self.problem(
                f"the record has inputs {sorted(values)}; dataset {name!r}'s earlier "
                f"records have {sorted(columns)}",
                file,
                line,
                "give every record of one dataset the same keys",
            )
            return
        for key, array in values.items():
            columns.setdefault(key, []).append(array)
        self.labels.setdefault(name, []).append(label)
        self.origins.setdefault(name, []).append(f"{file}:{line}")

    def tables(self) -> dict[str, Table]:
        out = {}
        for name, columns in self.rows.items():
            inputs = {}
            for key, arrays in columns.items():
                kind = self.shapes[(name, key)][1]
                inputs[key] = np.stack(arrays).astype(np.float32 if kind == "f" else np.int64)
            out[name] = Table(
                name, inputs, np.asarray(self.labels[name], np.int64), self.origins[name]
            )
        return out


def read_jsonl(files: Sequence[str], config: TrainConfig, what: str) -> Split:
    """Read and check every record of ``files``; one error lists every problem found."""
    collector = _Collector(config)
    for file in files:
        path = Path(file)
        if not path.exists():
            if config.data.missing_files == "error":
                collector.problem(
                    "the data file does not exist", file, None, "fix the path in the config"
                )
            else:
                log.warning("⚠️ 跳过不存在的文件: %s", file)  # seed 003's own warning
            continue
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    collector.problem(f"not valid JSON: {exc}", file, number, None)
                    continue
                collector.add(record, file, number)
    if collector.problems:
        more = f" (and {collector.dropped} more)" if collector.dropped else ""
        raise DataError(
            f"{len(collector.problems)} problem(s) in the {what} data{more}",
            problems=collector.problems,
            hint="fix the records listed; nothing was trained",
        )
    return Split(collector.tables())


def read_store(
    location: str, config: TrainConfig, *, split: str, task: str, name: str | None = None
) -> dict[str, Table]:
    """A sample store's split as tables: grouped by its dataset column when it has one,
    else all under ``name`` (or the store's folder name). Forecasting stores (windowed
    series) give ``x``/``te_x`` as inputs and ``y`` as the target."""
    from stagewise.data.samples import open_store

    store = open_store(location)
    if split not in store.splits:
        raise DataError(
            f"the sample store has no split {split!r}",
            location=location,
            hint=f"its splits are {', '.join(store.splits) or 'none'}",
        )
    part = store.split(split)
    columns = part.take(np.arange(len(part)))
    data = config.data
    if task == "forecasting":
        targets = np.asarray(columns["y"], np.float32)
        if _missing_policy(store) == "zero":  # the seed's null value: a missing target
            targets = np.where(targets == 0, np.nan, targets).astype(np.float32)
        # te_y (the target window's time features) is known ahead and tells the model Q.
        inputs = {
            k: np.asarray(columns[k], np.float32) for k in ("x", "te_x", "te_y") if k in columns
        }
        groups = {name or Path(location.rstrip("/")).name: np.arange(len(targets))}
    else:
        if data.label_key not in columns:
            raise DataError(
                f"the sample store has no '{data.label_key}' column",
                location=location,
                hint="preprocess the data with its label column, or set data.label_key",
            )
        targets = _labels(np.asarray(columns[data.label_key]), location, data.label_key)
        skip = {data.label_key, data.dataset_key, *DESCRIPTIVE}
        inputs = {}
        for key, values in columns.items():
            array = _numeric(values) if key not in skip else None
            if array is not None:
                inputs[key] = array.astype(np.float32 if array.dtype.kind == "f" else np.int64)
        labels = columns.get(data.dataset_key)
        if name is None and labels is not None:
            values = np.asarray([str(v) for v in labels])
            groups = {str(v): np.flatnonzero(values == v) for v in dict.fromkeys(values)}
        else:
            groups = {name or Path(location.rstrip("/")).name: np.arange(len(targets))}
    tables = {}
    for dataset, rows in groups.items():
        origins = [f"{location}#{split}[{i}]" for i in rows]
        tables[dataset] = Table(
            dataset, {k: v[rows] for k, v in inputs.items()}, targets[rows], origins
        )
    if task == "classification":
        check_labels(tables, config)
    return tables


def _labels(values: np.ndarray, location: str, key: str) -> np.ndarray:
    """A store's label column as class numbers; fractions or non-numbers are an error."""
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    bad = None
    if values.dtype.kind == "f":
        wrong = ~np.isfinite(values) | (values != np.round(values))
        bad = int(np.flatnonzero(wrong)[0]) if wrong.any() else None
    else:
        bad = 0
    if bad is not None:
        raise DataError(
            f"the '{key}' column holds {values[bad]!r} at row {bad}; expected class numbers",
            location=location,
            hint="labels are whole numbers 0..num_classes-1 in every dataset",
        )
    return values.astype(np.int64)


def _missing_policy(store: Any) -> str | None:
    """How the store's time-series preprocess filled missing readings (zero, nan, ffill)."""
    transform = getattr(store.metadata, "transform", None) or {}  # the preprocess settings
    settings = transform.get("timeseries") if isinstance(transform, dict) else None
    return settings.get("missing") if isinstance(settings, dict) else None


def _numeric(values: Any) -> np.ndarray | None:
    """A column as a numeric array (lists of equal length become a matrix), else None."""
    if isinstance(values, np.ndarray):
        return values if values.dtype.kind in "biuf" else None
    try:
        array = np.asarray(values)
    except ValueError:  # ragged lists
        return None
    return array if array.dtype.kind in "biuf" else None


def check_labels(tables: Mapping[str, Table], config: TrainConfig) -> None:
    """Every label within its dataset's classes and the head; every dataset configured."""
    problems: list[Problem] = []
    for name, table in tables.items():
        settings = config.datasets.dataset_configs.get(name)
        if settings is None:
            where = table.origins[0] if table.origins else name
            problems.append(
                Problem(
                    f"dataset {name!r} has no entry in datasets.dataset_configs",
                    file=where,
                    hint=f"add {name} under datasets.dataset_configs",
                )
            )
            continue
        limit = min(settings.num_classes or 0, config.model.num_labels)
        bad = np.flatnonzero((table.targets < 0) | (table.targets >= limit))
        for i in bad[:MAX_PROBLEMS]:
            problems.append(
                Problem(
                    f"label {int(table.targets[i])} is out of range for dataset {name!r} "
                    f"(num_classes {settings.num_classes}, model.num_labels "
                    f"{config.model.num_labels})",
                    file=table.origins[i] if table.origins else name,
                    hint=f"labels of {name} must be 0..{limit - 1}",
                )
            )
    if problems:
        raise DataError(f"{len(problems)} problem(s) in the data", problems=problems[:MAX_PROBLEMS])


# ------------------------------------------------------------------------- evaluation


def eval_subset(split: Split, config: TrainConfig, seed: int) -> Split:
    """Each dataset's fixed, seeded share ``eval_ratio`` (at least one sample)."""
    tables = {}
    for name, table in split.tables.items():
        ratio = config.datasets.dataset_configs[name].eval_ratio
        keep = max(1, round(len(table) * ratio)) if len(table) else 0
        if keep >= len(table):
            tables[name] = table
            continue
        rng = np.random.default_rng([seed, _stable(name)])
        chosen = np.sort(rng.choice(len(table), size=keep, replace=False))
        tables[name] = table.subset(chosen)
    return Split(tables)


def _stable(name: str) -> int:
    """A seed from the whole dataset name (names that share a prefix still differ)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


# ---------------------------------------------------------------------------- batches


def dataset_specs(names: Sequence[str], splits: Sequence[Split], config: TrainConfig) -> list:
    """What the model must know of each dataset: classes and input shapes."""
    specs = []
    for name in names:
        shapes: dict[str, tuple[int, ...]] = {}
        for split in splits:
            table = split.tables.get(name)
            if table is not None and len(table):
                shapes = table.shapes()
                break
        classes = config.datasets.dataset_configs[name].num_classes or 0
        specs.append(DatasetSpec(name, classes, shapes))
    return specs


def plan_for(split: Split, names: Sequence[str], shuffle: bool) -> MixturePlan:
    """Every sample of every dataset once per epoch (shuffled together, or in order)."""
    sizes = {n: len(split.tables[n]) for n in names if n in split.tables}
    return MixturePlan.from_counts(sizes, counts=sizes, shuffle=shuffle)


def make_batch(
    split: Split, names: Sequence[str], plan_names: Sequence[str], datasets: Any, indices: Any
) -> Batch:
    """Gather one batch: ``datasets`` are plan entry numbers, ``indices`` sample indices."""
    number = {n: i for i, n in enumerate(names)}
    datasets = np.asarray(datasets)
    indices = np.asarray(indices)
    run_numbers = np.array([number[plan_names[d]] for d in datasets], dtype=np.int64)
    groups: list[Group] = []
    targets: list[tuple[np.ndarray, np.ndarray]] = []
    for entry in np.unique(datasets):
        rows = np.flatnonzero(datasets == entry)
        table = split.tables[plan_names[entry]]
        inputs, target = table.take(indices[rows])
        groups.append(
            Group(
                number[plan_names[entry]],
                torch.from_numpy(rows),
                {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()},
            )
        )
        targets.append((rows, target))
    first = targets[0][1]
    out = np.empty((len(datasets), *first.shape[1:]), first.dtype)
    for rows, target in targets:
        out[rows] = target
    return Batch(
        len(datasets),
        groups,
        torch.from_numpy(run_numbers),
        torch.from_numpy(out),
        torch.from_numpy(indices.astype(np.int64)),
    )


def batches(
    sampler: MixtureSampler,
    split: Split,
    names: Sequence[str],
    batch_size: int,
    *,
    drop_last: bool = False,
) -> Iterator[Batch]:
    """The sampler's batches from its position; the sampler advances as they are taken."""
    plan_names = [e.name for e in sampler.plan.entries]
    for datasets, indices in sampler.batches(batch_size, drop_last=drop_last):
        batch = make_batch(split, names, plan_names, datasets, indices)
        sampler.advance(len(indices))
        yield batch


def eval_batches(
    split: Split, names: Sequence[str], batch_size: int, *, rank: int = 0, world_size: int = 1
) -> Iterator[Batch]:
    """Every sample of ``split`` once, dataset after dataset (no shuffle: deterministic);
    rank ``r`` of ``n`` gets batches ``r, r + n, ...``."""
    number = 0
    for name in names:
        table = split.tables.get(name)
        if table is None:
            continue
        for start in range(0, len(table), batch_size):
            number += 1
            if (number - 1) % world_size != rank:
                continue
            idx = np.arange(start, min(start + batch_size, len(table)))
            yield make_batch(split, names, [name], np.zeros(len(idx), np.int64), idx)


def describe_loading(split: Split, mode: str, full: Mapping[str, int] | None = None) -> str:
    """Seed 003's loading statistics block."""
    total = split.total
    lines = [f"📊 多数据集加载统计 ({mode}):"]
    for name, table in split.tables.items():
        share = len(table) / total if total else 0.0
        if full is not None and full.get(name, len(table)) != len(table):
            ratio = len(table) / full[name] if full[name] else 0.0
            lines.append(
                f"  • {name}: {full[name]:,} → {len(table):,} ({ratio:.1%}) samples ({share:.1%})"
            )
        else:
            lines.append(f"  • {name}: {len(table):,} samples ({share:.1%})")
    label = "部分评估后总计" if full is not None else "总计"
    lines.append(f"📊 {label}: {total:,} samples")
    return "\n".join(lines)
