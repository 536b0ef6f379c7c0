"""Models by name, built from a config with random weights (nothing is downloaded).

``build_model(name, datasets=..., num_labels=..., options=...)``:

- ``mlp``: tabular features; a per-dataset input layer (each dataset has its own feature
  count and scaling) into a shared trunk and one shared head of ``num_labels``.
- ``cnn``: small images; a shared convolutional trunk (adaptive pooling, so image sizes
  may differ by dataset) and the shared head.
- ``timeseries``: a Transformer encoder over windowed series (the sample stores of
  ``stagewise data preprocess``), with a forecasting head.
- ``hf:<AutoModel class>``: a Hugging Face model built from ``options`` as its config
  (``model_type`` plus sizes) with random weights, or loaded from a local folder
  (``pretrained``) with ``local_files_only``.

Every model takes a :class:`~stagewise.models.batch.Batch` and returns one output row per
sample; ``model.task`` is ``"classification"`` or ``"forecasting"``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from stagewise.errors import ConfigError
from stagewise.models.batch import Batch, DatasetSpec, Group, scatter

BUILDERS: dict[str, str] = {
    "mlp": "stagewise.models.mlp:build",
    "cnn": "stagewise.models.cnn:build",
    "timeseries": "stagewise.models.timeseries:build",
    "hf": "stagewise.models.hf:build",
}


def build_model(
    name: str,
    *,
    datasets: Sequence[DatasetSpec],
    num_labels: int,
    options: Mapping[str, Any] | None = None,
    pretrained: str | None = None,
) -> nn.Module:
    kind, _, argument = name.partition(":")
    target = BUILDERS.get(kind)
    if target is None or (kind == "hf") != bool(argument):
        raise ConfigError(
            f"unknown model {name!r}",
            location="model.name",
            hint="use mlp, cnn, timeseries, or hf:<AutoModel class> "
            "(e.g. hf:AutoModelForSequenceClassification)",
        )
    module, _, function = target.partition(":")
    builder = getattr(importlib.import_module(module), function)
    extra = {"class_name": argument} if kind == "hf" else {}
    return builder(
        datasets=list(datasets),
        num_labels=num_labels,
        options=dict(options or {}),
        pretrained=pretrained,
        **extra,
    )


__all__ = ["BUILDERS", "Batch", "DatasetSpec", "Group", "build_model", "scatter"]
