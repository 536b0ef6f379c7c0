"""Changing the active stage: switch, rollback, and the ``next_stage`` prediction.

Every change happens under the repo's lock file: read active_stage.yaml, close the open
history entry (deactivated_at, duration in seconds), append the new one, write the file
atomically, then append a ``stage_switch`` event to ``stage_events.jsonl``. The state
file is the truth: a process killed between the two writes leaves the event log one
line short, never the state file broken.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from stagewise.config import ActiveStage, HistoryEntry, NextStage, StageConfig, StageSwitchEvent
from stagewise.config.active import ActivatedBy
from stagewise.errors import ConfigError, StageChangedError, StageError
from stagewise.release import conditions
from stagewise.release.repo import ACTIVE_STAGE, EVENT_LOG, LOCK_FILE, Release, save_model
from stagewise.store.atomic import locked, open_log, remove_stale_temporaries, write_line

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
ACTIVE_HEADER = "# Written by stagewise: the active stage of this release repo and its history.\n"
Trigger = Literal["auto", "manual", "rollback"]


def timestamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now()).strftime(TIME_FORMAT)


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=None)
    except ValueError:
        return None


@dataclass(frozen=True)
class SwitchResult:
    from_stage: str | None
    to_stage: str
    variant: str | None
    event: StageSwitchEvent
    active: ActiveStage


class _Any(enum.Enum):
    STAGE = "any"


ANY_STAGE = _Any.STAGE


def switch(
    release: Release,
    stage: str,
    *,
    reason: str | None = None,
    by: ActivatedBy = "user",
    trigger: Trigger = "manual",
    variant: str | None = None,
    run_id: str | None = None,
    condition: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    next_stage: NextStage | None = None,
    if_current: str | _Any | None = ANY_STAGE,
) -> SwitchResult:
    """Make ``stage`` the active stage and record it (history entry and event).

    ``if_current`` makes the switch conditional: it happens only if the active stage is
    still the one the caller decided from (None: no stage active yet); otherwise
    :class:`StageChangedError` is raised and nothing changes. Automatic switches use it,
    so that ranks or runs sharing a repo switch once, and never undo a manual switch.
    """
    root = release.require_writable()
    config = release.require_stage_config()
    release.stage(stage)
    with locked(root / LOCK_FILE):
        remove_stale_temporaries(root / ACTIVE_STAGE)
        previous = release.read_active(check_stage=False)
        from_stage = previous.current_stage if previous else None
        if if_current is not ANY_STAGE and from_stage != if_current:
            raise StageChangedError(
                f"the active stage changed to {from_stage!r} before this switch to {stage!r}",
                location=ACTIVE_STAGE,
                hint="another process switched; look at 'stagewise stage status' and retry if needed",
            )
        chosen = release.choose_variant(stage, explicit=variant, run_id=run_id, active=previous)
        # A stage whose data config is broken is refused before any state changes.
        release.load_dataset_config(release.stage_config_file(stage, chosen))
        log = open_log(root / EVENT_LOG)  # an unwritable log also stops us before any change
        try:
            now = datetime.now().replace(microsecond=0)
            active = _activated(previous, stage, chosen, now, reason, by)
            active.next_stage = next_stage or predict_next(config, stage)
            event = StageSwitchEvent(
                timestamp=timestamp(now),
                event="stage_switch",
                from_stage=from_stage,
                to_stage=stage,
                trigger=trigger,
                condition=condition,
                metadata=dict(metadata or {}),
                variant=chosen,
                activated_by=by,
                reason=reason,
            )
            save_model(root / ACTIVE_STAGE, active, ACTIVE_HEADER)
            write_line(log, json.dumps(event.to_data(), ensure_ascii=False), root / EVENT_LOG)
        finally:
            os.close(log)
    return SwitchResult(from_stage, stage, chosen, event, active)


def _activated(
    previous: ActiveStage | None,
    stage: str,
    variant: str | None,
    now: datetime,
    reason: str | None,
    by: ActivatedBy,
) -> ActiveStage:
    """``previous`` with its open history entries closed and ``stage`` activated."""
    active = previous or ActiveStage(current_stage=stage)
    for entry in active.history:
        if entry.deactivated_at is None:
            entry.deactivated_at = timestamp(now)
            started = parse_time(entry.activated_at)
            entry.duration = round((now - started).total_seconds()) if started else None
    active.current_stage = stage
    active.current_variant = variant
    active.activated_at = timestamp(now)
    active.activated_by = by
    active.switch_reason = reason
    entry = HistoryEntry(
        stage=stage,
        variant=variant,
        activated_at=timestamp(now),
        deactivated_at=None,
        duration=None,
        reason=reason,
        activated_by=by,
    )
    active.history = [*active.history, entry]
    return active


def rollback(
    release: Release, *, reason: str | None = None, by: ActivatedBy = "user"
) -> SwitchResult:
    """Go back to the most recent earlier stage (or variant) in the history; with none, to
    ``switch_strategy.fallback_stage``."""
    active = release.read_active(check_stage=False)
    config = release.require_stage_config()
    current = (active.current_stage, active.current_variant) if active else (None, None)
    earlier = [(h.stage, h.variant) for h in (active.history if active else [])]
    target = next((entry for entry in reversed(earlier) if entry != current), None)
    fallback = config.switch_strategy.fallback_stage
    if target is None and fallback and fallback != current[0]:
        target = (fallback, None)
    if target is None:
        raise StageError(
            "there is no earlier stage to roll back to",
            location=ACTIVE_STAGE,
            hint="switch to a stage by name: stagewise stage switch STAGE",
        )
    return switch(
        release,
        target[0],
        reason=reason or f"rollback from {current[0]}",
        by=by,
        trigger="rollback",
        variant=target[1],
        if_current=current[0],
    )


def predict_next(
    config: StageConfig,
    current: str,
    *,
    epoch: int | None = None,
    seconds_per_epoch: float | None = None,
    now: datetime | None = None,
) -> NextStage | None:
    """The stage automatic switching would move to next, its conditions (alternatives: any
    one suffices) and, when the epoch pace is known, the earliest estimated time."""
    mode = config.switch_strategy.mode
    candidates = forward_candidates(config, current)
    if mode == "manual" or not candidates:
        return None
    stage = candidates[0]
    entries = config.stages[stage].auto_switch_conditions
    texts = [condition_text(entry.epoch, entry.condition) for entry in entries]  # alternatives
    thresholds = [entry.epoch for entry in entries if entry.epoch is not None]
    estimate = None
    if thresholds and epoch is not None and seconds_per_epoch is not None:
        remaining = max(min(thresholds) - epoch, 0)
        estimate = timestamp(
            (now or datetime.now()) + timedelta(seconds=remaining * seconds_per_epoch)
        )
    return NextStage(predicted_stage=stage, estimated_switch_time=estimate, conditions=texts)


def forward_candidates(config: StageConfig, current: str) -> list[str]:
    """Stages automatic switching may move to from ``current``, nearest first."""
    order = config.ordered_stages()
    later = order[order.index(current) + 1 :] if current in order else []
    mode = config.switch_strategy.mode
    return [
        name
        for name in later
        if config.stages[name].auto_switch_conditions
        and not (mode == "hybrid" and config.stages[name].trigger_mode == "manual")
    ]


def condition_text(epoch: int | None, condition: str | None) -> str:
    """One auto_switch_conditions entry as text: 'epoch >= 50 (pretraining_complete)'."""
    if epoch is None:
        return condition or ""
    if not condition:
        return f"epoch >= {epoch}"
    try:
        is_label = isinstance(conditions.parse(condition), conditions.Flag)
    except ConfigError:
        is_label = False
    if is_label:
        return f"epoch >= {epoch} ({condition})"
    return (
        f"epoch >= {epoch} and ({condition})"
        if " or " in condition
        else f"epoch >= {epoch} and {condition}"
    )
