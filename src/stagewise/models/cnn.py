"""``cnn``: small images of any size and channel count per dataset, one shared trunk and head.

Each dataset gets its own stem (a 3x3 convolution from its channel count to the shared
width, or 1x1 for images smaller than 3x3) with a per-channel input scaling fitted on its
training split (``fit_input_scaling``). The trunk is three shared convolution blocks
(GroupNorm, not BatchNorm: a batch mixes datasets, so a group may hold a single image),
the last two halving the resolution; adaptive average pooling then makes every image size
one vector, and the shared head maps it to ``num_labels``.

A record's image is ``(H, W)`` (one channel) or ``(C, H, W)`` (channels first).
Options: ``channels`` (32, the stem width; the trunk widens to twice that), ``dropout``
(0.1, before the head), ``column`` (the input column, ``image``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from stagewise.errors import ConfigError
from stagewise.models.batch import Batch, DatasetSpec, scatter

DEFAULTS: dict[str, Any] = {"channels": 32, "dropout": 0.1, "column": "image"}


def _block(width_in: int, width_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(width_in, width_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.GroupNorm(math.gcd(8, width_out), width_out),
        nn.GELU(),
    )


class _Stem(nn.Module):
    """Standardize with the dataset's own per-channel statistics, then convolve to the
    shared width."""

    def __init__(self, shape: tuple[int, ...], width: int) -> None:
        super().__init__()
        self.flat = len(shape) == 2
        channels, height, length = (1, *shape) if self.flat else shape
        self.register_buffer("mean", torch.zeros(channels, 1, 1))
        self.register_buffer("scale", torch.ones(channels, 1, 1))
        kernel = 3 if min(height, length) >= 3 else 1
        self.conv = _block(channels, width, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.flat:
            x = x.unsqueeze(1)
        return self.conv((x - self.mean) / self.scale)


class CNN(nn.Module):
    task = "classification"

    def __init__(
        self,
        datasets: Sequence[DatasetSpec],
        num_labels: int,
        *,
        channels: int = 32,
        dropout: float = 0.1,
        column: str = "image",
    ) -> None:
        super().__init__()
        self.column = column
        self.names = [d.name for d in datasets]
        stems = {}
        for d in datasets:
            shape = d.inputs.get(column)
            if shape is None or len(shape) not in (2, 3) or min(shape) < 1:
                raise ConfigError(
                    f"the cnn model needs an image, (H, W) or (C, H, W), under '{column}' in "
                    f"every record; dataset {d.name!r} has {dict(d.inputs) or 'no inputs'}",
                    location="model.name",
                    hint="give each record a nested list of pixels under 'image' (channels "
                    "first), or set model.options.column",
                )
            stems[d.name] = _Stem(shape, channels)
        self.stems = nn.ModuleDict(stems)
        wide = 2 * channels
        self.trunk = nn.Sequential(
            _block(channels, channels),
            _block(channels, wide, stride=2),
            _block(wide, wide, stride=2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(wide, num_labels))

    def fit_input_scaling(self, dataset: str, column: str, values: np.ndarray) -> None:
        """Standardize ``dataset``'s images with the per-channel mean and spread of
        ``values`` (``[n, H, W]`` or ``[n, C, H, W]``)."""
        if column != self.column or dataset not in self.stems:
            return
        stem = self.stems[dataset]
        values = np.asarray(values, dtype=np.float64)
        if stem.flat:
            values = values[:, None]
        axes = (0, 2, 3)
        spread = values.std(axis=axes)
        stem.mean.copy_(torch.from_numpy(values.mean(axis=axes)).float().view(-1, 1, 1))
        scale = np.where(spread > 1e-8, spread, 1.0)
        stem.scale.copy_(torch.from_numpy(scale).float().view(-1, 1, 1))

    def forward(self, batch: Batch) -> torch.Tensor:
        # The trunk runs once per group: image sizes differ between datasets, and pooling
        # makes every group one vector per image.
        parts = [
            self.trunk(self.stems[self.names[g.dataset]](g.inputs[self.column]))
            for g in batch.groups
        ]
        return self.head(scatter(batch, parts))


def check_options(kind: str, options: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """Refuse unknown keys and values of the wrong kind, naming ``model.options``."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ConfigError(
            f"unknown {kind} option(s): {', '.join(unknown)}",
            location="model.options",
            hint=f"the {kind} model takes {', '.join(sorted(defaults))}",
        )
    for key, value in options.items():
        default = defaults[key]
        if isinstance(default, str):
            good = isinstance(value, str) and bool(value)
        elif isinstance(default, float):
            good = isinstance(value, int | float) and not isinstance(value, bool)
            good = good and 0.0 <= value < 1.0
        else:
            good = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        if not good:
            want = {str: "a column name", float: "a number in [0, 1)"}.get(
                type(default), "a positive integer"
            )
            raise ConfigError(
                f"{kind} option {key} is {value!r}; expected {want}",
                location=f"model.options.{key}",
                hint=f"the default is {default!r}",
            )


def refuse_pretrained(kind: str, pretrained: str | None) -> None:
    if pretrained:
        raise ConfigError(
            f"model.pretrained_name is set, but the {kind} model has no pretrained weights",
            location="model.pretrained_name",
            hint="to fine-tune a Hugging Face model in that folder, set model.name to "
            "hf:<AutoModel class> (e.g. hf:AutoModelForImageClassification); otherwise set "
            "pretrained_name: null (a run in the same output_dir resumes by itself)",
        )


def build(
    *,
    datasets: Sequence[DatasetSpec],
    num_labels: int,
    options: Mapping[str, Any],
    pretrained: str | None = None,
) -> CNN:
    check_options("cnn", options, DEFAULTS)
    refuse_pretrained("cnn", pretrained)
    return CNN(datasets, num_labels, **{**DEFAULTS, **options})
