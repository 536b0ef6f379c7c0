"""What a model is given: a batch whose samples may come from datasets of different shapes.

Datasets in one run need not share an input shape (digits has 64 features, iris 4), so a
batch is split into groups, one per dataset present: each group holds its samples' inputs
at that dataset's shape and the rows they fill in the batch. A model maps every group to
a shared representation and returns one output row per sample, in batch order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about one dataset of the run."""

    name: str
    num_classes: int  # 0 for forecasting datasets
    inputs: dict[str, tuple[int, ...]]  # column -> per-sample shape, e.g. {"features": (64,)}


@dataclass
class Group:
    dataset: int  # the dataset's number: its position in the run's dataset list
    rows: torch.Tensor  # int64 [n]: where this group's samples sit in the batch
    inputs: dict[str, torch.Tensor]  # column -> [n, *shape]


@dataclass
class Batch:
    size: int
    groups: list[Group]
    dataset: torch.Tensor  # int64 [size]: each sample's dataset number
    targets: torch.Tensor  # int64 [size] labels, or float [size, ...] forecasting targets
    index: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.size,
            [
                Group(
                    g.dataset,
                    g.rows.to(device),
                    {k: v.to(device, non_blocking=True) for k, v in g.inputs.items()},
                )
                for g in self.groups
            ],
            self.dataset.to(device),
            self.targets.to(device, non_blocking=True),
            self.index,
        )


def scatter(batch: Batch, parts: list[torch.Tensor]) -> torch.Tensor:
    """One output row per sample, in batch order, from one output tensor per group."""
    first = parts[0]
    out = first.new_empty((batch.size, *first.shape[1:]))
    for group, part in zip(batch.groups, parts, strict=True):
        out[group.rows] = part
    return out
