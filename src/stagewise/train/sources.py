"""Where a run's data comes from: JSONL files and sample stores, or a release's stage.

:func:`load_data` gives the loop a :class:`Data`: the run's dataset names (the model's
inputs, in a fixed order), the training and evaluation splits as tables, and the mixture
plan of an epoch. Without a release every training sample is seen once per epoch; with
one, the stage's weights, duplicates and caps decide the counts.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from stagewise.config.training import TrainConfig
from stagewise.data.order import MixturePlan
from stagewise.errors import DataError
from stagewise.train.data import Split, plan_for, read_jsonl, read_store


@dataclass
class Data:
    """What the loop trains and evaluates on, for the current stage."""

    names: list[str]  # every dataset of the run, in a fixed order (the model's inputs)
    train: Split
    plan: MixturePlan
    val: Split
    stage: str | None = None


def load_data(config: TrainConfig, task: str, stage: str | None = None) -> Data:
    """The run's datasets from JSONL files and stores, or from a release stage."""
    names = list(config.datasets.dataset_configs)
    shuffle = config.datasets.shuffle_datasets
    if config.release is None:
        train = read_jsonl(config.data.train_jsonl_list, config, "training")
        val = read_jsonl(config.data.val_jsonl_list, config, "evaluation")
        for location in config.data.train_stores:
            train.tables.update(read_store(location, config, split="train", task=task))
        for location in config.data.val_stores:
            val.tables.update(read_store(location, config, split="test", task=task))
        if not train.total:
            raise DataError(
                "no training records were found",
                hint="check data.train_jsonl_list: every file was missing or empty",
            )
        present = [n for n in names if n in train.tables or n in val.tables]
        return Data(present, train, plan_for(train, present, shuffle), val)
    return _stage_data(config, task, stage, names)


def _stage_data(config: TrainConfig, task: str, stage: str | None, names: list[str]) -> Data:
    from stagewise.release import open_release
    from stagewise.release.loading import load_stage_data

    section = config.release
    assert section is not None
    release = open_release(section.path)
    loaded = load_stage_data(release, stage, variant=section.variant, split=section.train_split)
    train, val = Split({}), Split({})
    for entry in loaded.resolution.config.enabled_datasets:
        location = release.dataset_location(entry.location)
        train.tables.update(
            read_store(location, config, split=section.train_split, task=task, name=entry.name)
        )
        with contextlib.suppress(DataError):  # no eval split: trained on, not evaluated
            val.tables.update(
                read_store(location, config, split=section.val_split, task=task, name=entry.name)
            )
    return Data(names, train, loaded.plan, val, loaded.resolution.stage)


def all_stage_shapes(config: TrainConfig, task: str) -> list[Split]:
    """Every stage's data, for the model's per-dataset inputs (a later stage may bring
    datasets the first one does not have)."""
    from stagewise.release import open_release

    assert config.release is not None
    release = open_release(config.release.path)
    return [load_data(config, task, stage).train for stage in release.require_stage_config().stages]


def stage_setting(config: TrainConfig) -> str | None:
    assert config.release is not None
    return config.release.stage or os.environ.get("TRAINING_STAGE") or None


def stage_index(config: TrainConfig, stage: str) -> int:
    from stagewise.release import open_release

    assert config.release is not None
    return open_release(config.release.path).require_stage_config().ordered_stages().index(stage)
