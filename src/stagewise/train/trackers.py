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
import json
import logging
import math
import numbers
import os
import re
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol

from stagewise.config.training import TrainConfig
from stagewise.errors import Problem, StagewiseError

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
        return "overall" if found["scope"] == "overall" else "dataset"
    return "overall" if "overall" in name.split("_") else "other"


class Backend(Protocol):
    def log(self, metrics: Mapping[str, float], step: int) -> None: ...
    def event(self, name: str, payload: Mapping[str, Any]) -> None: ...
    def summary(self, values: Mapping[str, Any]) -> None: ...
    def close(self, failed: bool) -> None: ...


# ----------------------------------------------------------------------------- values


def _number(value: Any) -> float | int:
    """A metric as a plain number: ints stay ints (sample counts), the rest (numpy
    scalars, 0-d tensors) become floats."""
    if isinstance(value, numbers.Integral):
        return int(value)
    return float(value)


def _plain(value: Any) -> Any:
    """``value`` as strict JSON: non-finite floats become null, mappings and sequences
    are copied, anything else that JSON cannot hold becomes its text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, numbers.Number):
        return _plain(_number(value))
    return str(value)


def _json(value: Any) -> str:
    return json.dumps(_plain(value), ensure_ascii=False, allow_nan=False)


def _read_id(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def _write_id(path: Path, value: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(value + "\n", encoding="utf-8")
    os.replace(temporary, path)


# ----------------------------------------------------------------------------- backends


class JsonLines:
    """``metrics.jsonl``: ``{"step", "time", "metrics"}`` per log call, ``{"event": name,
    ...payload}`` per event, ``{"summary": {...}}``; appended and flushed each call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("a", encoding="utf-8")
        if self._file.tell() and not _ends_with_newline(path):
            self._file.write("\n")  # a crash cut the last line: start clean after it

    def _write(self, line: Mapping[str, Any]) -> None:
        self._file.write(_json(line) + "\n")
        self._file.flush()

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self._write({"step": step, "time": time.time(), "metrics": metrics})

    def event(self, name: str, payload: Mapping[str, Any]) -> None:
        self._write({"event": name, **{k: v for k, v in payload.items() if k != "event"}})

    def summary(self, values: Mapping[str, Any]) -> None:
        self._write({"summary": values})

    def close(self, failed: bool) -> None:
        self._file.close()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\n"


class TensorBoard:
    """Scalars by name and step; events and the summary as text (JSON)."""

    def __init__(self, log_dir: Path, resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: on resume, readers drop what the crashed run logged past the
        # checkpoint, so the curves do not fold back.
        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=resume_step, flush_secs=10)
        self._step = resume_step or 0

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, step)
        self._step = step

    def event(self, name: str, payload: Mapping[str, Any]) -> None:
        self._text(f"events/{name}", payload)

    def summary(self, values: Mapping[str, Any]) -> None:
        self._text("summary", values)

    def _text(self, tag: str, value: Mapping[str, Any]) -> None:
        text = json.dumps(_plain(value), ensure_ascii=False, indent=2)
        self._writer.add_text(tag, f"```json\n{text}\n```", self._step)
        self._writer.flush()

    def close(self, failed: bool) -> None:
        self._writer.close()


class WandbRun:
    """A W&B run: offline by default (nothing leaves the machine; ``wandb sync`` uploads
    it later), silent, resumed by the id in ``run_dir/wandb_run_id``."""

    def __init__(self, config: TrainConfig, run_dir: Path, run_name: str) -> None:
        section = config.wandb
        import wandb
        from wandb.errors import Error as WandbError

        self._dataset_metrics = section.log_dataset_metrics
        self._overall_metrics = section.log_overall_metrics
        id_file = run_dir / WANDB_ID_FILE
        known = _read_id(id_file)
        settings = wandb.Settings(
            silent=True,
            quiet=True,
            console="off",  # no wrapping of the program's stdout/stderr
            reinit="create_new",  # a run of its own, whatever else the process runs
            disable_git=True,
            save_code=False,
        )
        try:
            self._run = wandb.init(
                project=section.project,
                mode=section.mode,
                dir=str(run_dir),
                name=run_name,
                config=config.model_dump(mode="json"),
                id=known,
                resume="allow" if known else None,
                settings=settings,
            )
        except WandbError as error:
            raise TrackerError(
                f"W&B could not start the run: {error}",
                location="wandb",
                hint="for mode: online run 'wandb login' first; or set wandb.mode: offline",
            ) from error
        if known != self._run.id:
            _write_id(id_file, self._run.id)
        self._step = 0

    @property
    def id(self) -> str:
        return str(self._run.id)

    def _keeps(self, name: str) -> bool:
        scope = metric_scope(name)
        if scope == "dataset":
            return self._dataset_metrics
        if scope == "overall":
            return self._overall_metrics
        return True

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        kept = {k: v for k, v in metrics.items() if self._keeps(k)}
        if kept:
            self._run.log(kept, step=step)
        self._step = max(self._step, step)

    def event(self, name: str, payload: Mapping[str, Any]) -> None:
        # W&B has no events: the payload goes into the history at the current step.
        self._run.log({f"events/{name}": _json(payload)}, step=self._step)

    def summary(self, values: Mapping[str, Any]) -> None:
        kept = {k: _plain(v) for k, v in values.items() if self._keeps(k)}
        self._run.summary.update(kept)

    def close(self, failed: bool) -> None:
        self._run.finish(exit_code=1 if failed else 0)


class MlflowRun:
    """An MLflow run through ``MlflowClient`` (no global active run): params from the
    config, flattened; metrics by step; events as JSON artifacts under ``events/``;
    numeric summary values as metrics at the last step, the rest as ``summary.*`` tags."""

    def __init__(self, config: TrainConfig, run_dir: Path, run_name: str) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        section = config.tracking
        artifacts = None
        uri = section.mlflow_tracking_uri
        if uri is None:
            store = (run_dir / MLFLOW_DIR).resolve()
            store.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{store / 'mlflow.db'}"
            artifacts = (store / "artifacts").as_uri()  # not MLflow's default, ./mlruns
        try:
            with _quiet_mlflow_store():
                self._client = MlflowClient(tracking_uri=uri)
            experiment = self._experiment(section.mlflow_experiment, artifacts)
            id_file = run_dir / MLFLOW_ID_FILE
            self.id = (
                self._resume(_read_id(id_file))
                or self._client.create_run(
                    experiment, run_name=run_name, tags={"stagewise.run_dir": str(run_dir)}
                ).info.run_id
            )
            _write_id(id_file, self.id)
            self._log_params(_flatten(config.model_dump(mode="json")))
        except MlflowException as error:
            raise TrackerError(
                f"MLflow could not start the run: {error.message}",
                location=f"tracking.mlflow_tracking_uri ({uri})",
                hint="check the tracking URI, or leave it out for a local store in the "
                "run's folder",
            ) from error
        self._step = 0

    def _experiment(self, name: str, artifacts: str | None) -> str:
        from mlflow.exceptions import MlflowException

        found = self._client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self._client.create_experiment(name, artifact_location=artifacts))
        except MlflowException:  # another process created it first
            found = self._client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    def _resume(self, run_id: str | None) -> str | None:
        from mlflow.exceptions import MlflowException

        if run_id is None:
            return None
        try:
            self._client.get_run(run_id)
        except MlflowException:  # a different store than last time: start a new run
            return None
        self._client.update_run(run_id, status="RUNNING")
        return run_id

    def _log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        # Params cannot change once logged: a resumed run keeps the values it started with.
        logged = self._client.get_run(self.id).data.params
        fresh = [Param(k, v) for k, v in params.items() if k not in logged]
        for start in range(0, len(fresh), _MLFLOW_BATCH_PARAMS):
            self._client.log_batch(self.id, params=fresh[start : start + _MLFLOW_BATCH_PARAMS])

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        rows = [Metric(_mlflow_key(k), float(v), stamp, step) for k, v in metrics.items()]
        for start in range(0, len(rows), _MLFLOW_BATCH_METRICS):
            self._client.log_batch(self.id, metrics=rows[start : start + _MLFLOW_BATCH_METRICS])
        self._step = max(self._step, step)

    def event(self, name: str, payload: Mapping[str, Any]) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        line = {"event": name, **{k: v for k, v in payload.items() if k != "event"}}
        self._client.log_text(self.id, _json(line), f"events/{stamp}-{_mlflow_key(name)}.json")

    def summary(self, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                self._client.log_metric(self.id, _mlflow_key(key), float(value), step=self._step)
            else:
                text = value if isinstance(value, str) else _json(value)
                self._client.set_tag(
                    self.id, _mlflow_key(f"summary.{key}"), text[:_MLFLOW_TAG_LENGTH]
                )

    def close(self, failed: bool) -> None:
        self._client.set_terminated(self.id, "FAILED" if failed else "FINISHED")


# MLflow's limits (mlflow.utils.validation), fixed here rather than read from a private
# module: 100 params and 1000 metrics per batch, keys of 250 characters, values of 6000
# (params) and 8000 (tags).
_MLFLOW_BATCH_PARAMS = 100
_MLFLOW_BATCH_METRICS = 1000
_MLFLOW_KEY_LENGTH = 250
_MLFLOW_PARAM_LENGTH = 6000
_MLFLOW_TAG_LENGTH = 8000
_MLFLOW_BAD_KEY = re.compile(r"[^\w.\- ]")


def _mlflow_key(name: str) -> str:
    """A key MLflow accepts: letters, digits, ``_ . - space``; no leading dot."""
    key = _MLFLOW_BAD_KEY.sub("_", name)
    if key.startswith("."):
        key = "_" + key
    return key[:_MLFLOW_KEY_LENGTH] or "_"


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"training": {"lr": 0.001}}`` -> ``{"training.lr": "0.001"}``; lists as JSON,
    values cut to MLflow's length."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            out[_mlflow_key(name)] = text[:_MLFLOW_PARAM_LENGTH]
    return out


@contextlib.contextmanager
def _quiet_mlflow_store() -> Iterator[None]:
    """Opening a SQLite store prints alembic's migration lines and, with SQLAlchemy 2.1,
    MLflow's models raise a deprecation warning for the ``noload`` strategy: both are
    MLflow's own business, not the user's."""
    loggers = [logging.getLogger(name) for name in ("mlflow.store.db.utils", "alembic")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r".*``noload`` loader strategy", category=DeprecationWarning
            )
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


# ----------------------------------------------------------------------------- trackers


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
            values = {str(k): _number(v) for k, v in metrics.items()}
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
        if config.wandb.mode == "offline":
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
