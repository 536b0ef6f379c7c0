"""Where a run's data comes from: JSONL files and sample stores, or a release's stage.

:func:`load_data` gives the loop a :class:`Data`: the run's dataset names (the model's
inputs, in a fixed order), the training and evaluation splits as tables, and the mixture
plan of an epoch. Without a release every training sample is seen once per epoch; with
one, the stage's weights, duplicates and caps decide the counts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from stagewise.config.training import TrainConfig
from stagewise.data.order import MixturePlan
from stagewise.data.samples import open_store
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


def load_data(
    config: TrainConfig, task: str, stage: str | None = None, *, record: bool = True
) -> Data:
    """The run's datasets from JSONL files and stores, or from a release stage (whose
    loading statistics are appended to the repo's event log when ``record``). With a
    release, the stage's ``shuffle`` decides the order, not ``shuffle_datasets``."""
    names = list(config.datasets.dataset_configs)
    shuffle = config.datasets.shuffle_datasets
    if config.release is None:
        if task == "forecasting" and (config.data.train_jsonl_list or config.data.val_jsonl_list):
            raise DataError(
                "a forecasting model trains on windowed sample stores, not JSONL records",
                location="data.train_jsonl_list",
                hint="preprocess the series (stagewise data preprocess) and list the stores "
                "under data.train_stores / data.val_stores",
            )
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
        untrained = [n for n in val.tables if n not in train.tables]
        if untrained:
            raise DataError(
                f"dataset(s) {', '.join(untrained)} have evaluation records but no training "
                "records",
                hint="an untrained dataset's guesses would enter every overall metric: add "
                "its training file to data.train_jsonl_list, or drop its evaluation file",
            )
        present = [n for n in names if n in train.tables]
        return Data(present, train, plan_for(train, present, shuffle), val)
    return _stage_data(config, task, stage, names, record)


def _stage_data(
    config: TrainConfig, task: str, stage: str | None, names: list[str], record: bool = True
) -> Data:
    """The stage's training data and mixture; evaluation covers every stage's datasets, so
    metrics (and the best model) compare like with like across a stage switch."""
    from stagewise.release import open_release
    from stagewise.release.loading import load_stage_data

    section = config.release
    assert section is not None
    release = open_release(section.path)
    if os.environ.get("FORCE_DATASET_CONFIG"):
        stage = None  # seed 000: a forced dataset config wins over the stage
    if stage is not None:
        variant = release.choose_variant(
            stage, explicit=section.variant, active=release.read_active()
        )
    else:
        variant = section.variant
    loaded = load_stage_data(
        release, stage, variant=variant, split=section.train_split, record=record
    )
    train = Split({})
    for entry in loaded.resolution.config.enabled_datasets:
        location = release.dataset_location(entry.location)
        train.tables.update(
            read_store(location, config, split=section.train_split, task=task, name=entry.name)
        )
    val = Split({})
    for name, location in _every_stage_dataset(release).items():
        if section.val_split in open_store(location).splits:  # else: trained on only
            val.tables.update(
                read_store(location, config, split=section.val_split, task=task, name=name)
            )
    return Data(names, train, loaded.plan, val, loaded.resolution.stage)


def _every_stage_dataset(release: Any) -> dict[str, str]:
    """Each enabled dataset of every stage (of every A/B variant): name -> location."""
    found: dict[str, str] = {}
    stage_config = release.require_stage_config()
    for stage in stage_config.ordered_stages():
        definition = stage_config.stages[stage]
        choices = list(definition.variants) if definition.variants else [None]
        for variant in choices:
            dataset_config, _ = release.load_dataset_config(
                release.stage_config_file(stage, variant)
            )
            for entry in dataset_config.enabled_datasets:
                found.setdefault(entry.name, release.dataset_location(entry.location))
    return found


def all_stage_shapes(config: TrainConfig, task: str) -> list[Split]:
    """Every stage's training data, for the model's per-dataset inputs (a later stage may
    bring datasets the first one does not have)."""
    from stagewise.release import open_release

    assert config.release is not None
    release = open_release(config.release.path)
    stages = release.require_stage_config().ordered_stages()
    return [load_data(config, task, stage, record=False).train for stage in stages]


def stage_setting(config: TrainConfig) -> str | None:
    assert config.release is not None
    return config.release.stage or os.environ.get("TRAINING_STAGE") or None


def stage_index(config: TrainConfig, stage: str) -> int:
    from stagewise.release import open_release

    assert config.release is not None
    return open_release(config.release.path).require_stage_config().ordered_stages().index(stage)
