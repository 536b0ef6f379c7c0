"""``training_dataset.json`` and ``stages/*.json``: which datasets a stage trains on.

One format serves both: the default ``training_dataset.json`` of a release repo and each
stage's config file (seed 000). ``meta.stage_config`` carries the stage's mixing settings;
``dataset_index`` lists the datasets.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from stagewise.config.base import FormatModel, NonNegative

SamplingPriority = Literal["low", "medium", "high", "critical"]


class Augmentation(FormatModel):
    enabled: bool = Field(False, description="whether the stage augments its samples")
    methods: list[str] = Field(
        default_factory=list, description="augmentation names, e.g. rotation, brightness, noise"
    )


class StageDataConfig(FormatModel):
    data_ratio: dict[str, NonNegative] | None = Field(
        None,
        description=(
            "target share of the stage's samples per category; a category matches the dataset "
            "of that name or whose name starts with it ('highway' matches "
            "'highway_foundation_large'); 'others' takes the datasets no other key matches. "
            "Shares are normalised to sum to 1"
        ),
    )
    sampling_strategy: str | None = Field(
        None, description="how samples are drawn, e.g. balanced or targeted (recorded for loaders)"
    )
    max_clips_per_dataset: int | None = Field(
        None, ge=1, description="cap on the samples any one dataset contributes per epoch"
    )
    shuffle: bool | None = Field(None, description="whether samples are shuffled each epoch")
    augmentation: Augmentation | None = Field(None, description="augmentation settings")
    difficulty_progression: bool | None = Field(
        None, description="order datasets by difficulty_level as training progresses"
    )


class DatasetMeta(FormatModel):
    stage: str | None = Field(None, description="the stage this config belongs to")
    release_name: str | None = Field(None, description="name of this data release")
    consumer_version: str | None = Field(None, description="version of the consuming code")
    bundle_versions: list[str] | None = Field(None, description="data bundle versions used")
    created_at: str | None = Field(None, description="creation time, 'YYYY-MM-DD HH:MM:SS'")
    description: str | None = Field(None, description="free text")
    version: str | None = Field(None, description="version of this config")
    stage_config: StageDataConfig | None = Field(None, description="the stage's mixing settings")


class DatasetEntry(FormatModel):
    name: str = Field(min_length=1, description="dataset name, unique within the file")
    obs_path: str | None = Field(
        None, description="location of the data: obs:// or s3:// URL (S3-compatible), or a path"
    )
    path: str | None = Field(
        None, description="location of the data: relative to the repo, absolute, or fsspec URL"
    )
    bundle_versions: list[str] | None = Field(None, description="data bundle versions")
    duplicate: NonNegative = Field(
        1, description="how many times each sample is repeated per epoch (like a repeat factor)"
    )
    stage_weight: NonNegative | None = Field(
        None, description="target share of this dataset among the stage's samples"
    )
    sampling_priority: SamplingPriority | None = Field(
        None, description="low, medium, high or critical; breaks ties when counts are rounded"
    )
    enabled: bool = Field(True, description="false leaves the dataset out of the stage")
    difficulty_level: str | None = Field(
        None, description="e.g. basic, advanced, progressive (used by difficulty_progression)"
    )

    @model_validator(mode="after")
    def _has_location(self) -> DatasetEntry:
        if not self.obs_path and not self.path:
            raise ValueError(f"dataset {self.name!r} needs 'path' or 'obs_path'")
        return self

    @property
    def location(self) -> str:
        """Where the data is: ``path`` if given, else ``obs_path``."""
        return self.path or self.obs_path or ""


class DatasetConfig(FormatModel):
    meta: DatasetMeta | None = Field(None, description="release metadata and stage settings")
    dataset_index: list[DatasetEntry] = Field(description="the datasets of this config")

    @property
    def stage_config(self) -> StageDataConfig:
        return (self.meta.stage_config if self.meta else None) or StageDataConfig()

    @property
    def enabled_datasets(self) -> list[DatasetEntry]:
        return [d for d in self.dataset_index if d.enabled]
