"""Weights & Biases: offline by default; a resumed run continues the same W&B run."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stagewise.config.training import TrainConfig
from stagewise.train.trackers.base import (
    WANDB_ID_FILE,
    TrackerError,
    json_text,
    metric_scope,
    plain,
    read_id,
    write_id,
)


def wandb_mode(config: TrainConfig) -> str:
    """wandb.mode, else WANDB_MODE, else offline (nothing leaves the machine)."""
    return config.wandb.mode or os.environ.get("WANDB_MODE") or "offline"


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
        known = read_id(id_file)
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
                mode=wandb_mode(config),
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
            write_id(id_file, self._run.id)
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
        self._run.log({f"events/{name}": json_text(payload)}, step=self._step)

    def summary(self, values: Mapping[str, Any]) -> None:
        kept = {k: plain(v) for k, v in values.items() if self._keeps(k)}
        self._run.summary.update(kept)

    def close(self, failed: bool) -> None:
        self._run.finish(exit_code=1 if failed else 0)
