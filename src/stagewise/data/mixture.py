"""How many samples each source of a mixture contributes to one epoch. Pure counts.

Each source offers a *supply*: ``floor(size * repeat)``, capped at ``cap``.

- Without weights, every source contributes its whole supply.
- With weights, the shares follow the weights (normalised over the sources that offer
  samples: an empty source is left out and the others share its weight), and the epoch is the largest
  one that no source's supply limits: ``total = round(min_i(supply_i / w_i))``; each count
  is ``w_i * total``, rounded by largest remainder (ties: higher priority, then order) and
  never above the supply. ``repeat`` therefore bounds how often a sample may be seen in
  the epoch, and the source that runs out first sets the epoch size.

Seed 000's loading statistics follow from this: toll_station with 25,000 samples at weight
0.6 makes a 41,667-sample epoch.

:class:`MixturePlan` is the result handed to the sampler: each source's name, size and
count, whether to shuffle, and a fingerprint of all of it (the sampler's order depends on
the fingerprint). :func:`loading_statistics` renders a plan as seed 000's data-loading
statistics event.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Protocol

from stagewise.errors import DataError, Problem


@dataclass(frozen=True)
class Source:
    name: str
    size: int | None  # None: not known (not readable from here)
    repeat: float = 1
    cap: int | None = None
    weight: float | None = None
    priority: int = 0  # higher wins a tie when counts are rounded


@dataclass(frozen=True)
class Allocation:
    name: str
    supply: int | None
    share: float | None  # the normalised weight, when weights are used
    count: int | None  # None when a size it depends on is unknown


def supply(source: Source) -> int | None:
    if source.size is None:
        return None
    offered = math.floor(source.size * source.repeat + 1e-9)
    return min(offered, source.cap) if source.cap is not None else offered


def allocate(sources: Sequence[Source]) -> list[Allocation]:
    """Per-source sample counts for one epoch (see the module docstring)."""
    supplies = [supply(s) for s in sources]
    if not any(s.weight is not None for s in sources):
        return [Allocation(s.name, n, None, n) for s, n in zip(sources, supplies, strict=True)]
    if sum(float(s.weight or 0) for s in sources) <= 0:
        raise ValueError("all weights are 0: at least one source needs a weight above 0")
    # A source with nothing to offer (an empty file, duplicate 0) would make the epoch
    # empty; it is left out and the others share its weight.
    weights = [
        0.0 if n == 0 else float(s.weight or 0) for s, n in zip(sources, supplies, strict=True)
    ]
    total_weight = sum(weights)
    if total_weight <= 0:
        return [Allocation(s.name, n, 0.0, 0) for s, n in zip(sources, supplies, strict=True)]
    shares = [w / total_weight for w in weights]
    known = [n / p for n, p in zip(supplies, shares, strict=True) if n is not None and p > 0]
    if not known or any(n is None and p > 0 for n, p in zip(supplies, shares, strict=True)):
        # An unknown size may be the one that limits the epoch: only shares are certain.
        return [
            Allocation(s.name, n, p, 0 if p == 0 else None)
            for s, n, p in zip(sources, supplies, shares, strict=True)
        ]
    total = round(min(known))
    counts = apportion(total, shares, [n or 0 for n in supplies], [s.priority for s in sources])
    return [
        Allocation(s.name, n, p, c)
        for s, n, p, c in zip(sources, supplies, shares, counts, strict=True)
    ]


def apportion(
    total: int, shares: Sequence[float], limits: Sequence[int], priorities: Sequence[int]
) -> list[int]:
    """Hamilton's largest-remainder method, with per-source upper limits."""
    exact = [total * p for p in shares]
    counts = [min(math.floor(x), limit) for x, limit in zip(exact, limits, strict=True)]
    order = sorted(
        range(len(shares)), key=lambda i: (-(exact[i] - math.floor(exact[i])), -priorities[i], i)
    )
    left = total - sum(counts)
    while left > 0:
        progressed = False
        for i in order:
            if left == 0:
                break
            if counts[i] < limits[i] and shares[i] > 0:
                counts[i] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    return counts


@dataclass(frozen=True)
class MixtureEntry:
    name: str
    size: int  # samples the source holds
    count: int  # samples it contributes to one epoch
    weight: float | None = None  # as configured, for the loading statistics


class DatasetPlanLike(Protocol):
    """What :meth:`MixturePlan.from_stage_plan` reads of a ``release.plan.DatasetPlan``
    (``stagewise.data`` does not import ``stagewise.release``: see DESIGN.md, Layers)."""

    @property
    def name(self) -> str: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def samples(self) -> int | None: ...
    @property
    def duplicate(self) -> float: ...
    @property
    def cap(self) -> int | None: ...
    @property
    def weight(self) -> float | None: ...
    @property
    def share(self) -> float | None: ...
    @property
    def expected(self) -> int | None: ...


class StagePlanLike(Protocol):
    @property
    def datasets(self) -> Sequence[DatasetPlanLike]: ...
    @property
    def weighting(self) -> str: ...


@dataclass(frozen=True)
class MixturePlan:
    """The sources of one epoch, in order, with their sizes and counts."""

    entries: tuple[MixtureEntry, ...]
    shuffle: bool = True
    stage: str | None = None

    def __post_init__(self) -> None:
        # Canonical types, so that weight 2 and 2.0 give one fingerprint.
        canonical = tuple(
            MixtureEntry(
                e.name, int(e.size), int(e.count), None if e.weight is None else float(e.weight)
            )
            for e in self.entries
        )
        object.__setattr__(self, "entries", canonical)
        problems, seen = [], set()
        for e in self.entries:
            if e.name in seen:
                problems.append(Problem("listed twice", key=e.name))
            seen.add(e.name)
            if e.size < 0 or e.count < 0:
                problems.append(Problem(f"size {e.size}, count {e.count}", key=e.name))
            elif e.count > 0 and e.size == 0:
                problems.append(Problem(f"an empty source cannot give {e.count}", key=e.name))
        if problems:
            raise DataError(
                "the mixture plan is not valid",
                problems=problems,
                hint="sizes and counts are non-negative; only a non-empty source gives samples",
            )

    @property
    def total(self) -> int:
        return sum(e.count for e in self.entries)

    @cached_property
    def fingerprint(self) -> str:
        canonical = {
            "entries": [[e.name, e.size, e.count, e.weight] for e in self.entries],
            "shuffle": self.shuffle,
        }
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def from_counts(
        cls,
        sizes: Mapping[str, int],
        counts: Mapping[str, int] | None = None,
        weights: Mapping[str, float] | None = None,
        shuffle: bool = True,
        stage: str | None = None,
    ) -> MixturePlan:
        """Sources in ``sizes`` order. Without ``counts``, counts follow ``weights`` by
        :func:`~stagewise.data.mixture.allocate` (each source once when no weights)."""
        weights = dict(weights or {})
        strays = sorted((set(counts or {}) | set(weights)) - set(sizes))
        if strays:
            raise DataError(
                f"counts or weights name sources without a size: {', '.join(strays)}",
                hint="give every source a size",
            )
        if counts is None:
            sources = [
                Source(n, int(s), weight=weights.get(n, 0.0) if weights else None)
                for n, s in sizes.items()
            ]
            counts = {a.name: int(a.count or 0) for a in _allocate(sources)}
        entries = tuple(
            MixtureEntry(n, int(s), int(counts.get(n, 0)), weights.get(n)) for n, s in sizes.items()
        )
        return cls(entries, shuffle, stage)

    @classmethod
    def from_stage_plan(
        cls,
        stage_plan: StagePlanLike,
        sizes: Mapping[str, int] | None = None,
        shuffle: bool = True,
        stage: str | None = None,
    ) -> MixturePlan:
        """The enabled datasets of a ``release.plan.StagePlan``. ``sizes`` (for example the
        sizes of the opened sample stores) override the plan's counted ``samples``; when
        any does, the counts are allocated again with the plan's duplicate, cap and
        weights."""
        sizes = dict(sizes or {})
        enabled = [d for d in stage_plan.datasets if d.enabled]
        known = {d.name: sizes.get(d.name, d.samples) for d in enabled}
        unknown = [name for name, size in known.items() if size is None]
        if unknown:
            raise DataError(
                f"the size of {', '.join(unknown)} is not known",
                location="dataset_index",
                hint="pass sizes= (the sizes of the opened sample stores), or give the "
                "dataset a file whose samples can be counted",
            )
        weighted = stage_plan.weighting != "none"
        weights = {
            d.name: (d.weight if stage_plan.weighting == "stage_weight" else d.share)
            for d in enabled
        }
        if all(known[d.name] == d.samples and d.expected is not None for d in enabled):
            counts = {d.name: int(d.expected or 0) for d in enabled}
        else:
            sources = [
                Source(
                    d.name,
                    int(known[d.name] or 0),
                    float(d.duplicate),
                    d.cap,
                    (float(weights[d.name] or 0.0) if weighted else None),
                    int(getattr(d, "priority", 1)),
                )
                for d in enabled
            ]
            counts = {a.name: int(a.count or 0) for a in _allocate(sources)}
        entries = tuple(
            MixtureEntry(d.name, int(known[d.name] or 0), counts[d.name], weights[d.name])
            for d in enabled
        )
        return cls(entries, shuffle, stage)


def _allocate(sources: list[Source]) -> list[Any]:
    try:
        return allocate(sources)
    except ValueError as exc:
        raise DataError(str(exc), hint="give a source a weight above 0") from None


def loading_statistics(
    plan: MixturePlan,
    load_times: Mapping[str, float] | None = None,
    *,
    stage: str | None = None,
    now: datetime | None = None,
    total_load_time: float | None = None,
) -> dict[str, Any]:
    """Seed 000's data loading statistics event for ``plan``. ``total_load_time`` defaults
    to the sum of ``load_times`` (pass the wall time when sources load in parallel)."""
    times = dict(load_times or {})
    total_time = sum(times.values()) if total_load_time is None else total_load_time
    return {
        "timestamp": (now or datetime.now()).strftime("%Y-%m-%d %H:%M:%S"),
        "stage": stage if stage is not None else plan.stage,
        "datasets_loaded": [
            {
                "name": e.name,
                "clips_loaded": e.count,
                "weight": e.weight,
                "load_time": f"{times.get(e.name, 0.0):.1f}s",
            }
            for e in plan.entries
        ],
        "total_clips": plan.total,
        "total_load_time": f"{total_time:.1f}s",
    }
