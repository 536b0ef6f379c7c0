"""``timeseries``: a Transformer encoder that forecasts windowed series (seed 004's samples).

Made for the windows of a ``stagewise data preprocess`` time-series store: ``x`` is the
input window ``[P, N, C]`` (steps, nodes, channels), ``te_x`` its time features ``[P, 2]``
(step of the day, day of week; optional) and the target ``y`` is ``[Q, N, C]``. The
output has the target's shape, ``[n, Q, N, C]``, in the series' own units.

**Per node over time.** Each node of each sample is one sequence of ``P`` tokens, and the
encoder attends over time only (channel-independent in the nodes, like PatchTST): the
simpler of the two layouts, linear in the node count, and it learns daily patterns from
the time embeddings. A token is the sum of embeddings of the step's values (all channels),
the step's position in the window, the time of day and day of week (shared by every
dataset), and the node (each dataset has its own nodes). A flatten head maps a node's
``P`` encoded tokens to its ``Q`` steps of every channel.

**Scaling.** Each window is standardized per node and channel by its own mean and spread
(reversible instance normalization), and the forecast is scaled back, so datasets and
nodes of very different levels share one model with no fitted statistics. NaN inputs
(``missing: nan``) are left out of those statistics and enter as the mean.

Each dataset has its own value embedding, node embedding, positions and head (shapes are
its own); the time embeddings and the encoder are shared. ``num_labels`` is ignored (a
forecast has the target's shape). Options: ``d_model`` (64), ``heads`` (4), ``layers``
(2), ``dropout`` (0.1), ``input_column`` (``x``), ``time_column`` (``te_x``),
``day_slots`` (1440: time-of-day embeddings, enough for steps of a minute or longer;
a longer day wraps around), ``horizon`` (``Q``; default: the length of the dataset's
``y`` or ``te_y`` column where the trainer declares one, else ``P``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from stagewise.errors import ConfigError
from stagewise.models.batch import Batch, DatasetSpec, scatter
from stagewise.models.cnn import check_options, refuse_pretrained

DEFAULTS: dict[str, Any] = {
    "d_model": 64,
    "heads": 4,
    "layers": 2,
    "dropout": 0.1,
    "input_column": "x",
    "time_column": "te_x",
    "day_slots": 1440,
    "horizon": None,
}
_EPS = 1e-5


class _Series(nn.Module):
    """One dataset's own parts: value and node embeddings, positions, forecasting head."""

    def __init__(self, window: tuple[int, ...], horizon: int, width: int) -> None:
        super().__init__()
        steps, nodes, channels = window
        self.horizon = horizon
        self.value = nn.Linear(channels, width)
        self.node = nn.Embedding(nodes, width)
        self.position = nn.Parameter(torch.randn(steps, 1, width) * 0.02)
        self.head = nn.Linear(steps * width, self.horizon * channels)
        nn.init.normal_(self.node.weight, std=0.02)


class TimeSeriesTransformer(nn.Module):
    task = "forecasting"

    def __init__(
        self,
        datasets: Sequence[DatasetSpec],
        *,
        d_model: int = 64,
        heads: int = 4,
        layers: int = 2,
        dropout: float = 0.1,
        input_column: str = "x",
        time_column: str = "te_x",
        day_slots: int = 1440,
        horizon: int | None = None,
    ) -> None:
        super().__init__()
        if d_model % heads:
            raise ConfigError(
                f"d_model {d_model} is not a multiple of heads {heads}",
                location="model.options",
                hint="each attention head takes d_model / heads channels: pick values that "
                "divide, e.g. d_model 64 with heads 4",
            )
        self.input_column, self.time_column = input_column, time_column
        self.horizon = horizon
        self.names = [d.name for d in datasets]
        self.series = nn.ModuleDict({d.name: _Series(*self._shapes(d), d_model) for d in datasets})
        self.time_of_day = nn.Embedding(day_slots, d_model)
        self.day_of_week = nn.Embedding(7, d_model)
        for table in (self.time_of_day, self.day_of_week):
            nn.init.normal_(table.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, 4 * d_model, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )

    def _shapes(self, spec: DatasetSpec) -> tuple[tuple[int, ...], int]:
        """A dataset's input window ``(P, N, C)`` and horizon ``Q``: the option, else the
        length of ``y`` or ``te_y`` where the dataset declares them, else ``P``."""
        window = spec.inputs.get(self.input_column, ())
        times = spec.inputs.get(self.time_column)
        if len(window) != 3 or min(window) < 1:
            problem = f"an '{self.input_column}' window [P, N, C]"
        elif times is not None and (len(times) != 2 or times[0] != window[0] or times[1] < 2):
            problem = f"'{self.time_column}' time features [P, 2] beside its window"
        else:
            later = spec.inputs.get("y") or spec.inputs.get("te_y") or window
            return window, self.horizon or later[0]
        raise ConfigError(
            f"the timeseries model needs {problem}; dataset {spec.name!r} has "
            f"{dict(spec.inputs) or 'no inputs'}",
            location="model.name",
            hint="train on the windows of a time-series sample store (stagewise data "
            "preprocess with transform: timeseries), or set model.options.input_column",
        )

    def forward(self, batch: Batch) -> torch.Tensor:
        parts = [
            self._forecast(
                self.series[self.names[g.dataset]],
                g.inputs[self.input_column],
                g.inputs.get(self.time_column),
            )
            for g in batch.groups
        ]
        out = scatter(batch, parts)
        targets = batch.targets  # a guard only: shapes, never values (inference has none)
        if targets.dim() == out.dim() and targets.shape[1:] != out.shape[1:]:
            raise ConfigError(
                f"the model forecasts {list(out.shape[1:])} per sample but the targets are "
                f"{list(targets.shape[1:])}",
                location="model.options.horizon",
                hint=f"set model.options.horizon to {targets.shape[1]} (the windows' output_len)",
            )
        return out

    def _forecast(self, own: _Series, x: torch.Tensor, te: torch.Tensor | None) -> torch.Tensor:
        x = x.float()  # [n, P, N, C]
        n, steps, nodes, channels = x.shape
        seen = ~torch.isnan(x)
        count = seen.sum(1, keepdim=True).clamp(min=1)
        mean = torch.where(seen, x, 0.0).sum(1, keepdim=True) / count
        centred = torch.where(seen, x - mean, 0.0)
        std = ((centred * centred).sum(1, keepdim=True) / count + _EPS).sqrt()
        tokens = own.value(centred / std) + own.position + own.node.weight  # [n, P, N, d]
        if te is not None:
            te = te.long()
            when = self.time_of_day(te[..., 0] % self.time_of_day.num_embeddings)
            when = when + self.day_of_week(te[..., 1] % 7)  # [n, P, d]
            tokens = tokens + when[:, :, None, :]
        width = tokens.shape[-1]
        tokens = tokens.transpose(1, 2).reshape(n * nodes, steps, width)
        encoded = self.encoder(tokens).reshape(n * nodes, steps * width)
        forecast = own.head(encoded).reshape(n, nodes, own.horizon, channels).transpose(1, 2)
        return forecast * std + mean  # back in the series' units: [n, Q, N, C]


def build(
    *,
    datasets: Sequence[DatasetSpec],
    num_labels: int,
    options: Mapping[str, Any],
    pretrained: str | None = None,
) -> TimeSeriesTransformer:
    """``num_labels`` is ignored: a forecast has the shape of its target."""
    check_options("timeseries", options, DEFAULTS)
    refuse_pretrained("timeseries", pretrained)
    return TimeSeriesTransformer(datasets, **{**DEFAULTS, **options})
