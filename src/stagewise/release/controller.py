"""Automatic stage switching driven by training progress.

A training loop calls ``observe`` once per epoch::

    controller = StageController(open_release(), run_id="run-42")
    stage = controller.start()                 # activates the default stage if none is
    for epoch in range(epochs):
        train_one_epoch(data_for(stage))
        decision = controller.observe(epoch=epoch + 1, metrics={"loss": loss})
        if decision.switched:
            stage = decision.to_stage           # rebuild the data for the new stage

``epoch`` is the number of epochs finished. At epochs that are multiples of
``switch_strategy.check_interval`` the controller evaluates the conditions of the stages
after the current one (by priority) and switches to the furthest one whose conditions
hold: ``auto`` mode considers every such stage, ``hybrid`` skips stages with
``trigger_mode: manual``, ``manual`` never switches. Each observation also refreshes
``next_stage`` in active_stage.yaml, with a time estimate from the observed epoch pace.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stagewise.config import AutoSwitchCondition, NextStage
from stagewise.errors import StageChangedError
from stagewise.release import conditions
from stagewise.release.repo import ACTIVE_STAGE, LOCK_FILE, Release, save_model
from stagewise.release.switching import (
    ACTIVE_HEADER,
    condition_text,
    forward_candidates,
    predict_next,
    switch,
)
from stagewise.store.atomic import locked


@dataclass(frozen=True)
class Decision:
    """What ``observe`` decided: whether the stage changed, to what, and why."""

    epoch: int
    from_stage: str
    to_stage: str
    variant: str | None = None
    condition: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)

    @property
    def switched(self) -> bool:
        return self.from_stage != self.to_stage


class StageController:
    def __init__(
        self, release: Release, *, run_id: str | None = None, variant: str | None = None
    ) -> None:
        self.release = release
        self.config = release.require_stage_config()
        self.run_id = run_id or os.environ.get("STAGEWISE_RUN_ID") or uuid.uuid4().hex
        self.variant = variant
        self.named = conditions.compile_named(self.config.conditions or {})
        self._epoch_marks: list[tuple[int, float]] = []
        self._seen: str | None = None  # the stage this process last trained on

    def start(self) -> str:
        """Make sure a stage is active (the default stage, if none is yet); return it."""
        active = self.release.read_active()
        if active is not None:
            return active.current_stage
        stage = self.config.initial_stage
        try:
            switch(
                self.release,
                stage,
                reason="training_start",
                by="system",
                trigger="auto",
                variant=self._variant_for(stage),
                run_id=self.run_id,
                condition="start",
                metadata={"epoch": 0},
                if_current=None,
            )
        except StageChangedError:  # another rank or run started the repo first
            return self._active_now()[0]
        return stage

    def continue_from(self, stage: str) -> None:
        """A resumed run: ``stage`` is what it trained on when it stopped. The repo may have
        switched past it (the run died between the switch and its checkpoint); the next
        ``observe`` then reports that switch, so the run follows it."""
        self._seen = stage

    def observe(self, epoch: int, metrics: Mapping[str, Any] | None = None) -> Decision:
        """Record one finished epoch; switch stage if the conditions say so.

        The decision compares with the stage this controller last saw, so every process
        sharing the repo (the ranks of one run, say) learns of a switch: the first to take
        the lock switches, the others find it done and get the same decision."""
        metrics = dict(metrics or {})
        self._epoch_marks.append((epoch, time.monotonic()))
        before = self._seen or self.start()
        current = self.start()  # another process may have switched since
        stage, variant, why = current, None, None
        strategy = self.config.switch_strategy
        if strategy.mode != "manual" and epoch % strategy.check_interval == 0:
            target = self._target(current, {**metrics, "epoch": epoch})
            if target is not None:
                try:
                    result = switch(
                        self.release,
                        target[0],
                        reason=f"auto: {target[1]}",
                        by="system",
                        trigger="auto",
                        variant=self._variant_for(target[0]),
                        run_id=self.run_id,
                        condition=target[1],
                        metadata={"epoch": epoch, **metrics},
                        next_stage=self._prediction(target[0], epoch),
                        if_current=current,
                    )
                    stage, variant, why = target[0], result.variant, target[1]
                except StageChangedError:  # another process switched first: follow it
                    stage, variant = self._active_now()
        if stage == current and why is None:
            self._refresh_prediction(current, epoch)
        self._seen = stage
        return Decision(epoch, before, stage, variant, why, metrics)

    def _active_now(self) -> tuple[str, str | None]:
        active = self.release.read_active()
        if active is None:
            return self.config.initial_stage, None
        return active.current_stage, active.current_variant

    def _target(self, current: str, values: Mapping[str, Any]) -> tuple[str, str] | None:
        for stage in reversed(forward_candidates(self.config, current)):
            for entry in self.config.stages[stage].auto_switch_conditions:
                if self._holds(entry, values):
                    return stage, condition_text(entry.epoch, entry.condition)
        return None

    def _holds(self, entry: AutoSwitchCondition, values: Mapping[str, Any]) -> bool:
        if entry.epoch is not None and values["epoch"] < entry.epoch:
            return False
        if not entry.condition:
            return True
        return conditions.evaluate(
            conditions.parse(entry.condition),
            values,
            self.named,
            labels_hold=entry.epoch is not None,
        )

    def _variant_for(self, stage: str) -> str | None:
        """The controller's own variant, for stages that have variants; otherwise switch()
        takes AB_VARIANT, else picks one from the run id."""
        return self.variant if self.release.stage(stage).variants else None

    def seconds_per_epoch(self) -> float | None:
        """The mean wall time of the observed epochs, once two have been observed."""
        if len(self._epoch_marks) < 2:
            return None
        (first_epoch, first_time), (last_epoch, last_time) = (
            self._epoch_marks[0],
            self._epoch_marks[-1],
        )
        epochs = last_epoch - first_epoch
        return (last_time - first_time) / epochs if epochs > 0 else None

    def _prediction(self, stage: str, epoch: int) -> NextStage | None:
        return predict_next(
            self.config,
            stage,
            epoch=epoch,
            seconds_per_epoch=self.seconds_per_epoch(),
            now=datetime.now(),
        )

    def _refresh_prediction(self, current: str, epoch: int) -> None:
        root = self.release.require_writable()
        prediction = self._prediction(current, epoch)
        with locked(root / LOCK_FILE):
            active = self.release.read_active()
            if active is None or active.current_stage != current:
                return  # someone switched meanwhile; their prediction stands
            if (active.next_stage.to_data() if active.next_stage else None) == (
                prediction.to_data() if prediction else None
            ):
                return
            active.next_stage = prediction
            save_model(root / ACTIVE_STAGE, active, ACTIVE_HEADER)
