"""Where a training run's metrics go: ``metrics.jsonl`` always; TensorBoard, W&B, MLflow.

The trainer logs through one :class:`Trackers` made by :func:`open_trackers`; each backend
is a small class behind the same four calls (``log``, ``event``, ``summary``, ``close``).
Only rank 0 writes anything: other ranks get a :class:`Trackers` that does nothing.

- ``run_dir/metrics.jsonl`` (always): one line per call, appended and flushed, so a crash
  loses nothing logged and a resumed run appends to the same file.
- TensorBoard (``tracking.tensorboard``): event files under ``run_dir/tensorboard``.
- W&B (``wandb.enabled``): offline by default, under ``run_dir/wandb``; the run id is kept
  in ``run_dir/wandb_run_id`` so a resumed run continues it. ``log_dataset_metrics`` and
  ``log_overall_metrics`` choose what reaches W&B (:func:`metric_scope`).
- MLflow (``tracking.mlflow``): ``tracking.mlflow_tracking_uri``, else a local SQLite store
  under ``run_dir/mlruns``; the run id is kept in ``run_dir/mlflow_run_id``.

A backend whose package is missing fails at open time, with every missing one named.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from stagewise.config.training import TrainConfig
from stagewise.errors import Problem
from stagewise.train.trackers.base import (
    INSTALL_HINT,
    METRICS_FILE,
    MLFLOW_ID_FILE,
    TENSORBOARD_DIR,
    WANDB_ID_FILE,
    Backend,
    TrackerError,
    metric_scope,
    number,
)
from stagewise.train.trackers.local import JsonLines, TensorBoard
from stagewise.train.trackers.mlflow_run import MlflowRun
from stagewise.train.trackers.wandb_run import WandbRun, wandb_mode


class Trackers:
    """The trainer's one handle on every backend; a context manager. Closing twice is
    harmless; a run that ends in an exception is closed as failed."""

    def __init__(self, backends: Sequence[Backend] = ()) -> None:
        self.backends = list(backends)
        self._closed = False

    def _open(self) -> list[Backend]:
        if self._closed:
            raise TrackerError("the trackers are closed", hint="log before close()")
        return self.backends

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Metrics under the seed's names (``train_food101_loss``, ...) at ``step``."""
        backends = self._open()
        if backends:
            values = {str(k): number(v) for k, v in metrics.items()}
            for backend in backends:
                backend.log(values, int(step))

    def event(self, name: str, payload: Mapping[str, Any]) -> None:
        """An event such as seed 000's ``stage_switch`` or ``best_model``."""
        for backend in self._open():
            backend.event(name, payload)

    def summary(self, values: Mapping[str, Any]) -> None:
        """End-of-run values: ``best_model_step``, ``final_eval_overall_accuracy``, ..."""
        for backend in self._open():
            backend.summary(values)

    def close(self, *, failed: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        _close_all(self.backends, failed)

    def __enter__(self) -> Trackers:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(failed=kind is not None)


def _close_all(backends: Sequence[Backend], failed: bool) -> None:
    """Close every backend, newest first, even when one fails; then raise the first."""
    problem: BaseException | None = None
    for backend in reversed(backends):
        try:
            backend.close(failed)
        except Exception as error:
            problem = problem or error
    if problem is not None:
        raise problem


# Each backend's import, tried before any backend opens (a W&B run is not half started
# because MLflow is missing).
_PACKAGES = {
    "tracking.tensorboard": ("torch.utils.tensorboard", "tensorboard"),
    "wandb.enabled": ("wandb", "wandb"),
    "tracking.mlflow": ("mlflow.tracking", "mlflow-skinny"),
}


def _enabled(config: TrainConfig) -> dict[str, bool]:
    return {
        "tracking.tensorboard": config.tracking.tensorboard,
        "wandb.enabled": config.wandb.enabled,
        "tracking.mlflow": config.tracking.mlflow,
    }


def _library_defaults(config: TrainConfig) -> None:
    """Set before the first import, as environment variables (a variable the user set
    wins). MLflow 3 sends usage telemetry from a thread that ``import mlflow`` starts, and
    wandb-core reports its own crashes: both over the network, which an offline or local
    run must not use. W&B's warnings print through a process-wide printer that reads
    ``WANDB_SILENT`` (``Settings(silent=True)`` on the run does not reach it)."""
    if config.tracking.mlflow:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if config.wandb.enabled:
        os.environ.setdefault("WANDB_SILENT", "true")
        if wandb_mode(config) == "offline":
            os.environ.setdefault("WANDB_ERROR_REPORTING", "false")


def check_packages(config: TrainConfig) -> None:
    """Raise :class:`TrackerError` naming every enabled tracker whose package is missing."""
    problems = []
    for key, on in _enabled(config).items():
        module, package = _PACKAGES[key]
        if not on:
            continue
        try:
            importlib.import_module(module)
        except ImportError as error:
            problems.append(
                Problem(
                    f"needs the package {package!r}, which cannot be imported ({error})", key=key
                )
            )
    if problems:
        raise TrackerError(
            "a tracker is enabled but its package is not installed",
            problems=problems,
            hint=f"{INSTALL_HINT}, or turn the tracker off",
        )


def open_trackers(
    config: TrainConfig,
    run_dir: Path,
    *,
    run_name: str,
    rank: int = 0,
    resume_step: int | None = None,
) -> Trackers:
    """Open ``metrics.jsonl`` and every enabled tracker for a run in ``run_dir``.

    Rank 0 only: any other rank gets trackers that write nothing. A run that resumes in
    the same ``run_dir`` appends to ``metrics.jsonl`` and continues the same W&B and MLflow
    runs; ``resume_step`` (the checkpoint's step) lets TensorBoard drop what the
    interrupted run logged after it.
    """
    if rank != 0:
        return Trackers()
    _library_defaults(config)
    check_packages(config)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    opened: list[Backend] = []
    try:
        opened.append(JsonLines(run_dir / METRICS_FILE))
        if config.tracking.tensorboard:
            opened.append(TensorBoard(run_dir / TENSORBOARD_DIR, resume_step))
        if config.wandb.enabled:
            opened.append(WandbRun(config, run_dir, run_name))
        if config.tracking.mlflow:
            opened.append(MlflowRun(config, run_dir, run_name))
    except BaseException:
        with contextlib.suppress(Exception):
            _close_all(opened, failed=True)
        raise
    return Trackers(opened)


__all__ = [
    "MLFLOW_ID_FILE",
    "WANDB_ID_FILE",
    "TrackerError",
    "Trackers",
    "check_packages",
    "metric_scope",
    "open_trackers",
]
