"""What every tracker backend shares: file names, the metric scopes, value cleaning."""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from stagewise.errors import StagewiseError

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"
WANDB_ID_FILE = "wandb_run_id"
MLFLOW_ID_FILE = "mlflow_run_id"
INSTALL_HINT = "pip install 'stagewise[tracking]'"

# The metric names of seed 003: <train|eval|final_eval>_<dataset or overall>_<measure>.
_SCOPED = re.compile(
    r"^(?:train|eval|final_eval)_(?P<scope>.+)_(?:loss|accuracy|samples|correct|mae|rmse|mape)$"
)
Scope = Literal["best", "overall", "dataset", "other"]


class TrackerError(StagewiseError):
    """A tracker that cannot be opened (its package is missing, it refused the run) or a
    call on trackers that are closed."""


def metric_scope(name: str) -> Scope:
    """Which of the seed's W&B switches governs a metric: ``best_*`` always goes
    ("best"); a name with ``overall`` is "overall"; ``<split>_<dataset>_<measure>`` is
    "dataset"; anything else (a learning rate, the epoch) always goes ("other")."""
    if name.startswith("best_"):
        return "best"
    found = _SCOPED.match(name)
    if found:
        scope = found["scope"]  # "overall", a dataset, or "step-N_overall" (a kept model)
        return "overall" if scope == "overall" or scope.endswith("_overall") else "dataset"
    return "overall" if "overall" in name.split("_") else "other"


class Backend(Protocol):
    def log(self, metrics: Mapping[str, float], step: int) -> None: ...
    def event(self, name: str, payload: Mapping[str, Any]) -> None: ...
    def summary(self, values: Mapping[str, Any]) -> None: ...
    def close(self, failed: bool) -> None: ...


# ----------------------------------------------------------------------------- values


def number(value: Any) -> float | int:
    """A metric as a plain number: ints stay ints (sample counts), the rest (numpy
    scalars, 0-d tensors) become floats."""
    if isinstance(value, numbers.Integral):
        return int(value)
    return float(value)


def plain(value: Any) -> Any:
    """``value`` as strict JSON: non-finite floats become null, mappings and sequences
    are copied, anything else that JSON cannot hold becomes its text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, numbers.Number):
        return plain(number(value))
    return str(value)


def json_text(value: Any) -> str:
    return json.dumps(plain(value), ensure_ascii=False, allow_nan=False)


def read_id(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def write_id(path: Path, value: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(value + "\n", encoding="utf-8")
    os.replace(temporary, path)


# ----------------------------------------------------------------------------- backends
