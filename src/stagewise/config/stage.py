"""``stage_config.yaml``: the stages of a release repo and how training moves between them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from stagewise.config.base import FormatModel, NonNegative


class AutoSwitchCondition(FormatModel):
    epoch: int | None = Field(
        None, ge=0, description="the stage may start once this many epochs are done"
    )
    condition: str | None = Field(
        None,
        description=(
            "an expression such as 'loss < 0.1 and epoch >= 50', or a name: one defined under "
            "'conditions:', 'start', or a label such as 'pretraining_complete' that holds "
            "once the epoch is reached"
        ),
    )

    @model_validator(mode="after")
    def _not_empty(self) -> AutoSwitchCondition:
        if self.epoch is None and not self.condition:
            raise ValueError("an auto_switch_conditions entry needs 'epoch' or 'condition'")
        return self


class Variant(FormatModel):
    config_file: str = Field(description="the variant's dataset config, relative to the repo")
    weight: NonNegative = Field(
        1, description="share of runs that get this variant when AB_VARIANT is not set"
    )


class StageDefinition(FormatModel):
    name: str | None = Field(None, description="display name")
    description: str | None = Field(None, description="free text")
    config_file: str | None = Field(
        None, description="the stage's dataset config, relative to the repo (or a URL)"
    )
    priority: int | None = Field(
        None, description="order of stages in training; automatic switches only move forward"
    )
    auto_switch_conditions: list[AutoSwitchCondition] = Field(
        default_factory=list,
        description="the stage starts automatically when any one of these holds",
    )
    trigger_mode: Literal["auto", "manual"] | None = Field(
        None, description="manual: only a person switches to this stage (in hybrid mode)"
    )
    variants: dict[str, Variant] | None = Field(
        None, description="A/B variants, each with its own config_file and weight"
    )

    @model_validator(mode="after")
    def _one_config(self) -> StageDefinition:
        if bool(self.config_file) == bool(self.variants):
            raise ValueError("a stage needs exactly one of 'config_file' and 'variants'")
        return self


class SwitchStrategy(FormatModel):
    mode: Literal["auto", "manual", "hybrid"] = Field(
        "auto",
        description=(
            "auto: switch when conditions hold; manual: never switch automatically; "
            "hybrid: switch automatically only to stages whose trigger_mode is not manual"
        ),
    )
    check_interval: int = Field(
        1, ge=1, description="conditions are checked at epochs that are multiples of this"
    )
    fallback_stage: str | None = Field(
        None, description="where 'stage rollback' goes when the history has no earlier stage"
    )


class StageConfig(FormatModel):
    stages: dict[str, StageDefinition] = Field(min_length=1, description="the stages, by name")
    default_stage: str | None = Field(
        None, description="the stage used when none is active (default: the first stage)"
    )
    switch_strategy: SwitchStrategy = Field(
        default_factory=SwitchStrategy, description="how automatic switching behaves"
    )
    conditions: dict[str, str] | None = Field(
        None,
        description="named conditions for auto_switch_conditions, e.g. converged: 'loss < 0.05'",
    )

    def ordered_stages(self) -> list[str]:
        """Stage names by priority, then by the order they are written in."""
        names = list(self.stages)
        return sorted(
            names,
            key=lambda n: (
                self.stages[n].priority if self.stages[n].priority is not None else 10**9,
                names.index(n),
            ),
        )

    @property
    def initial_stage(self) -> str:
        return self.default_stage or next(iter(self.stages))
