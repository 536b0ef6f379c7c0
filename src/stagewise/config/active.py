"""``active_stage.yaml``: the stage in force, who chose it and why, and the history."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stagewise.config.base import FormatModel, Number

ActivatedBy = Literal["system", "user", "scheduler"]


class HistoryEntry(FormatModel):
    stage: str = Field(description="the stage that was active")
    variant: str | None = Field(None, description="its A/B variant, if any")
    activated_at: str | None = Field(None, description="'YYYY-MM-DD HH:MM:SS'")
    deactivated_at: str | None = Field(None, description="null while still active")
    duration: Number | None = Field(None, description="seconds active; null while active")
    reason: str | None = Field(None, description="why the stage was activated")
    activated_by: ActivatedBy | None = Field(None, description="system, user or scheduler")


class NextStage(FormatModel):
    predicted_stage: str | None = Field(None, description="the stage expected next")
    estimated_switch_time: str | None = Field(
        None, description="when, extrapolated from observed epoch durations"
    )
    conditions: list[str] = Field(default_factory=list, description="what must hold for the switch")


class ActiveStage(FormatModel):
    current_stage: str = Field(description="the active stage")
    current_variant: str | None = Field(None, description="the active A/B variant, if any")
    activated_at: str | None = Field(None, description="'YYYY-MM-DD HH:MM:SS'")
    activated_by: ActivatedBy | None = Field(None, description="system, user or scheduler")
    switch_reason: str | None = Field(None, description="why the stage was activated")
    history: list[HistoryEntry] = Field(default_factory=list, description="every activation")
    next_stage: NextStage | None = Field(None, description="the predicted next switch")
