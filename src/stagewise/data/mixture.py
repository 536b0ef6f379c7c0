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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


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
