"""``mlp``: tabular features of any width per dataset, one shared trunk and head.

Each dataset gets its own input layer (its feature count is its own) with a feature
scaling fitted on its training split (``fit_input_scaling``); the trunk and the head of
``num_labels`` are shared, so what one dataset teaches the trunk helps the others.
Options: ``hidden`` (256), ``layers`` (2 trunk layers), ``dropout`` (0.1), ``column``
(the input column, ``features``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from stagewise.errors import ConfigError
from stagewise.models.batch import Batch, DatasetSpec, scatter
from stagewise.models.cnn import refuse_pretrained


class _Input(nn.Module):
    """Standardize with the dataset's own statistics, then project to the trunk width."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("scale", torch.ones(width))
        self.project = nn.Linear(width, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project((x.float() - self.mean) / self.scale)


class MLP(nn.Module):
    task = "classification"

    def __init__(
        self,
        datasets: Sequence[DatasetSpec],
        num_labels: int,
        *,
        hidden: int = 256,
        layers: int = 2,
        dropout: float = 0.1,
        column: str = "features",
    ) -> None:
        super().__init__()
        self.column = column
        self.names = [d.name for d in datasets]
        inputs = {}
        for d in datasets:
            shape = d.inputs.get(column)
            if shape is None or len(shape) != 1:
                raise ConfigError(
                    f"the mlp model needs a '{column}' vector in every record; dataset "
                    f"{d.name!r} has {dict(d.inputs) or 'no inputs'}",
                    location="model.name",
                    hint="give each record a list of numbers under 'features', or set "
                    "model.options.column",
                )
            inputs[d.name] = _Input(shape[0], hidden)
        self.inputs = nn.ModuleDict(inputs)
        trunk: list[nn.Module] = []
        for _ in range(layers):
            trunk += [nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden)]
        self.trunk = nn.Sequential(*trunk, nn.GELU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, num_labels)

    def fit_input_scaling(self, dataset: str, column: str, values: np.ndarray) -> None:
        """Standardize ``dataset``'s inputs with the mean and spread of ``values``."""
        if column != self.column or dataset not in self.inputs:
            return
        layer = self.inputs[dataset]
        values = np.asarray(values, dtype=np.float64)
        spread = values.std(axis=0)
        layer.mean.copy_(torch.from_numpy(values.mean(axis=0)).float())
        layer.scale.copy_(torch.from_numpy(np.where(spread > 1e-8, spread, 1.0)).float())

    def forward(self, batch: Batch) -> torch.Tensor:
        parts = [self.inputs[self.names[g.dataset]](g.inputs[self.column]) for g in batch.groups]
        return self.head(self.trunk(scatter(batch, parts)))


def build(
    *,
    datasets: Sequence[DatasetSpec],
    num_labels: int,
    options: Mapping[str, Any],
    pretrained: str | None = None,
) -> MLP:
    known = {"hidden", "layers", "dropout", "column"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(
            f"unknown mlp option(s): {', '.join(unknown)}",
            location="model.options",
            hint=f"the mlp takes {', '.join(sorted(known))}",
        )
    refuse_pretrained("mlp", pretrained)
    return MLP(datasets, num_labels, **options)
