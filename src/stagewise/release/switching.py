"""Changing the active stage: switch, rollback, and the ``next_stage`` prediction.

Every change happens under the repo's lock file: read active_stage.yaml, close the open
history entry (deactivated_at, duration in seconds), append the new one, write the file
atomically, then append a ``stage_switch`` event to ``stage_events.jsonl``. The state
file is the truth: a process killed between the two writes leaves the event log one
line short, never the state file broken.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from stagewise.config import ActiveStage, HistoryEntry, NextStage, StageConfig, StageSwitchEvent
from stagewise.config.active import ActivatedBy
from stagewise.errors import ConfigError, StageError
from stagewise.release import conditions
from stagewise.release.repo import ACTIVE_STAGE, EVENT_LOG, LOCK_FILE, Release, save_model
from stagewise.store.atomic import append_line, locked, remove_stale_temporaries

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
) -> SwitchResult:
    """Make ``stage`` the active stage and record it (history entry and event)."""
    root = release.require_writable()
    config = release.require_stage_config()
    chosen = release.pick_variant(stage, variant, run_id)
    # Refuse to switch to a stage whose data config is broken: check before changing state.
    release.load_dataset_config(release.stage_config_file(stage, chosen))
    with locked(root / LOCK_FILE):
        remove_stale_temporaries(root / ACTIVE_STAGE)
        previous = release.read_active()
        from_stage = previous.current_stage if previous else None
        now = datetime.now().replace(microsecond=0)
        active = previous or ActiveStage(current_stage=stage)
        if previous is not None:
            _close_open_entries(active, now)
        active.current_stage = stage
        active.current_variant = chosen
        active.activated_at = timestamp(now)
        active.activated_by = by
        active.switch_reason = reason
        active.history = [
            *active.history,
            HistoryEntry(
                stage=stage,
                variant=chosen,
                activated_at=timestamp(now),
                deactivated_at=None,
                duration=None,
                reason=reason,
                activated_by=by,
            ),
        ]
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
        append_line(root / EVENT_LOG, json.dumps(event.to_data(), ensure_ascii=False))
    return SwitchResult(from_stage, stage, chosen, event, active)


def _close_open_entries(active: ActiveStage, now: datetime) -> None:
    for entry in active.history:
        if entry.deactivated_at is None:
            entry.deactivated_at = timestamp(now)
            started = parse_time(entry.activated_at)
            entry.duration = round((now - started).total_seconds()) if started else None


def rollback(
    release: Release, *, reason: str | None = None, by: ActivatedBy = "user"
) -> SwitchResult:
    """Go back to the stage that was active before the current one."""
    active = release.read_active()
    config = release.require_stage_config()
    target = variant = None
    if active is not None and len(active.history) >= 2:
        target, variant = active.history[-2].stage, active.history[-2].variant
    elif config.switch_strategy.fallback_stage and (
        active is None or active.current_stage != config.switch_strategy.fallback_stage
    ):
        target = config.switch_strategy.fallback_stage
    if target is None:
        raise StageError(
            "there is no earlier stage to roll back to",
            location=ACTIVE_STAGE,
            hint="switch to a stage by name: stagewise stage switch STAGE",
        )
    current = active.current_stage if active else None
    return switch(
        release,
        target,
        reason=reason or f"rollback from {current}",
        by=by,
        trigger="rollback",
        variant=variant,
    )


def predict_next(
    config: StageConfig,
    current: str,
    *,
    epoch: int | None = None,
    seconds_per_epoch: float | None = None,
    now: datetime | None = None,
) -> NextStage | None:
    """The stage automatic switching would move to next, with its conditions and, when the
    epoch pace is known, an estimated time."""
    mode = config.switch_strategy.mode
    candidates = forward_candidates(config, current)
    if mode == "manual" or not candidates:
        return None
    stage = candidates[0]
    texts: list[str] = []
    thresholds: list[int] = []
    for entry in config.stages[stage].auto_switch_conditions:
        if entry.epoch is not None:
            texts.append(f"epoch >= {entry.epoch}")
            thresholds.append(entry.epoch)
        if entry.condition and entry.condition not in conditions.BUILTIN_LABELS:
            texts.append(entry.condition)
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
