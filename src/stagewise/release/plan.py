"""What a stage will train on: its datasets, their weights, and the expected counts.

Weights come from ``stage_weight`` when any enabled dataset sets one; otherwise from
``meta.stage_config.data_ratio``, whose categories match datasets by name (``highway``
matches ``highway`` and ``highway_foundation_large``; ``others`` takes what no other
category matches), a category's share split evenly among its datasets. Counts follow
:mod:`stagewise.data.mixture`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

from stagewise.config import DatasetConfig
from stagewise.data.mixture import Source, allocate
from stagewise.errors import ConfigError
from stagewise.store import locations

PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
_SEPARATORS = ("_", "-", ".", "/")


@dataclass(frozen=True)
class DatasetPlan:
    name: str
    location: str
    enabled: bool
    category: str | None
    samples: int | None
    duplicate: float
    cap: int | None
    weight: float | None
    share: float | None
    expected: int | None
    note: str | None
    priority: int = 1  # sampling_priority as a rank (low 0 .. critical 3): breaks rounding ties


@dataclass(frozen=True)
class StagePlan:
    datasets: list[DatasetPlan]
    weighting: str  # "stage_weight" | "data_ratio" | "none"

    @property
    def total(self) -> int | None:
        counts = [d.expected for d in self.datasets if d.enabled]
        return None if any(c is None for c in counts) else sum(c or 0 for c in counts)

    COLUMNS = (
        "dataset",
        "location",
        "enabled",
        "stage_weight",
        "share",
        "duplicate",
        "cap",
        "samples",
        "expected",
        "note",
    )

    def rows(self) -> list[list[object]]:
        """The plan as table rows under :attr:`COLUMNS` (for the CLI and the report)."""
        return self.rows_of([asdict(d) for d in self.datasets])

    @staticmethod
    def rows_of(datasets: list[dict[str, Any]]) -> list[list[object]]:
        return [
            [
                d["name"],
                d["location"],
                "yes" if d["enabled"] else "no",
                d["weight"],
                f"{d['share']:.1%}" if d["share"] is not None else None,
                f"{d['duplicate']:g}",
                d["cap"],
                d["samples"],
                d["expected"],
                d["note"],
            ]
            for d in datasets
        ]

    def to_dict(self) -> dict[str, object]:
        return {
            "weighting": self.weighting,
            "total": self.total,
            "datasets": [asdict(d) for d in self.datasets],
        }


def category_of(name: str, categories: list[str]) -> str | None:
    """The data_ratio category a dataset belongs to (the longest matching prefix)."""
    matches = [
        c for c in categories if name == c or name.startswith(tuple(c + s for s in _SEPARATORS))
    ]
    if matches:
        return max(matches, key=len)
    return "others" if "others" in categories else None


def ratio_weights(
    names: list[str], ratios: dict[str, float]
) -> tuple[dict[str, float], dict[str, str | None]]:
    """Each dataset's weight from category ratios (a category's share split evenly among
    its datasets; 0 for a dataset in no category), and each dataset's category."""
    total = sum(float(v) for v in ratios.values()) or 1.0
    categories = {name: category_of(name, list(ratios)) for name in names}
    members: dict[str, int] = {}
    for category in categories.values():
        if category is not None:
            members[category] = members.get(category, 0) + 1
    weights = {
        name: (float(ratios[c]) / total / members[c] if c is not None else 0.0)
        for name, c in categories.items()
    }
    return weights, categories


def target_weights(
    config: DatasetConfig,
) -> tuple[dict[str, float | None], str, dict[str, str | None]]:
    """Per enabled dataset: its weight, where the weights came from, and its category."""
    enabled = config.enabled_datasets
    ratios = config.stage_config.data_ratio or {}
    categories = {d.name: category_of(d.name, list(ratios)) for d in enabled}
    if any(d.stage_weight is not None for d in enabled):
        return (
            {
                d.name: (float(d.stage_weight) if d.stage_weight is not None else 0.0)
                for d in enabled
            },
            "stage_weight",
            categories,
        )
    if ratios:
        weights, _ = ratio_weights([d.name for d in enabled], ratios)
        return dict(weights), "data_ratio", categories
    return {d.name: None for d in enabled}, "none", categories


def count_samples(location: str, split: str = "train") -> tuple[int | None, str | None]:
    """Samples in a dataset: a sample store's split (read from its metadata), or a file's
    records (JSON lines, a JSON array, or CSV rows); else None and why not known."""
    if not locations.is_url(location) and os.path.isdir(location):
        return _store_split_size(location, split)
    lowered = location.lower()
    if not lowered.endswith((".jsonl", ".jsonlines", ".ndjson", ".json", ".csv")):
        return None, "format not counted here"
    if not locations.is_url(location) and not os.path.isfile(location):
        return None, "file not found"
    try:
        with _open_binary(location) as handle:
            if lowered.endswith(".json"):
                data = handle.read()
                if data.lstrip()[:1] == b"[":
                    return len(json.loads(data)), None
                return sum(1 for line in data.splitlines() if line.strip()), None
            rows = sum(1 for line in handle if line.strip())
            return (max(rows - 1, 0) if lowered.endswith(".csv") else rows), None
    except Exception as exc:  # a preview reports what it cannot read rather than failing
        return None, f"not readable: {type(exc).__name__}"


def _store_split_size(folder: str, split: str) -> tuple[int | None, str | None]:
    # Read as plain JSON: counting needs no pyarrow (the data extra may be absent).
    metadata = os.path.join(folder, "metadata.json")
    try:
        if not os.path.exists(metadata):
            with open(os.path.join(folder, "LATEST"), encoding="utf-8") as handle:
                metadata = os.path.join(folder, handle.read().strip(), "metadata.json")
        with open(metadata, encoding="utf-8") as handle:
            splits = json.load(handle)["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, "folder: not a readable sample store"
    if split not in splits:
        return None, f"store has no {split!r} split"
    return int(splits[split]["count"]), None


def _open_binary(location: str) -> BinaryIO:
    if locations.is_url(location):
        fs, path = locations.filesystem(location)
        return fs.open(path, "rb")  # type: ignore[no-any-return]
    return open(location, "rb")  # the caller closes it


def plan_stage(
    config: DatasetConfig, resolve_location: Callable[[str], str], *, count_remote: bool = False
) -> StagePlan:
    """Weights, sample counts and expected per-epoch counts of one dataset config."""
    weights, weighting, categories = target_weights(config)
    cap = config.stage_config.max_clips_per_dataset
    counted: dict[str, tuple[int | None, str | None]] = {}
    for entry in config.enabled_datasets:
        where = resolve_location(entry.location)
        remote_skipped = locations.is_url(where) and not count_remote
        counted[entry.name] = (
            (None, "remote: not counted (--count-remote)")
            if remote_skipped
            else count_samples(where)
        )
    sources = [
        Source(
            d.name,
            counted[d.name][0],
            float(d.duplicate),
            cap,
            weights[d.name],
            PRIORITY_RANK.get(d.sampling_priority or "", 1),
        )
        for d in config.enabled_datasets
    ]
    try:
        allocations = {a.name: a for a in allocate(sources)}
    except ValueError as exc:
        raise ConfigError(
            str(exc), location="dataset_index", hint="give a dataset a weight above 0"
        ) from None
    plans = []
    for d in config.dataset_index:
        allocation = allocations.get(d.name) if d.enabled else None
        samples, note = counted.get(d.name, (None, None))
        plans.append(
            DatasetPlan(
                name=d.name,
                location=resolve_location(d.location),
                enabled=d.enabled,
                category=categories.get(d.name),
                samples=samples,
                duplicate=float(d.duplicate),
                cap=cap,
                weight=None if d.stage_weight is None else float(d.stage_weight),
                share=allocation.share if allocation else None,
                expected=allocation.count if allocation else (None if d.enabled else 0),
                note=note if d.enabled else "disabled",
                priority=PRIORITY_RANK.get(d.sampling_priority or "", 1),
            )
        )
    return StagePlan(plans, weighting)
