"""Event lines: the ``stage_switch`` event of seed 000, one JSON object per line."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from stagewise.config.base import FormatModel


class StageSwitchEvent(FormatModel):
    timestamp: str = Field(description="'YYYY-MM-DD HH:MM:SS'")
    event: Literal["stage_switch"] = "stage_switch"
    from_stage: str | None = Field(description="the stage before, null for the first")
    to_stage: str = Field(description="the stage after")
    trigger: Literal["auto", "manual", "rollback"] = Field(
        description="auto (the controller), manual (a person or script) or rollback"
    )
    condition: str | None = Field(None, description="the condition that held, for auto")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="epoch and metrics at the switch"
    )
    variant: str | None = Field(None, description="the A/B variant switched to, if any")
    activated_by: str | None = Field(None, description="system, user or scheduler")
    reason: str | None = Field(None, description="why the switch was made")
