"""MLflow: a local SQLite store by default; a resumed run continues the same run."""

from __future__ import annotations

import contextlib
import json
import logging
import numbers
import re
import time
import warnings
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stagewise.config.training import TrainConfig
from stagewise.train.trackers.base import (
    MLFLOW_DIR,
    MLFLOW_ID_FILE,
    TrackerError,
    json_text,
    read_id,
    write_id,
)


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
                self._resume(read_id(id_file))
                or self._client.create_run(
                    experiment, run_name=run_name, tags={"stagewise.run_dir": str(run_dir)}
                ).info.run_id
            )
            write_id(id_file, self.id)
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
        self._client.log_text(self.id, json_text(line), f"events/{stamp}-{_mlflow_key(name)}.json")

    def summary(self, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                self._client.log_metric(self.id, _mlflow_key(key), float(value), step=self._step)
            else:
                text = value if isinstance(value, str) else json_text(value)
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
