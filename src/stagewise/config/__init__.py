"""Schemas of every file format, and the one place that parses them."""

from stagewise.config.active import ActiveStage, HistoryEntry, NextStage
from stagewise.config.base import FormatModel, load_model
from stagewise.config.dataset import DatasetConfig, DatasetEntry, DatasetMeta, StageDataConfig
from stagewise.config.events import StageSwitchEvent
from stagewise.config.loading import Document, dump_json, dump_yaml, format_key, parse_document
from stagewise.config.stage import (
    AutoSwitchCondition,
    StageConfig,
    StageDefinition,
    SwitchStrategy,
    Variant,
)

__all__ = [
    "ActiveStage",
    "AutoSwitchCondition",
    "DatasetConfig",
    "DatasetEntry",
    "DatasetMeta",
    "Document",
    "FormatModel",
    "HistoryEntry",
    "NextStage",
    "StageConfig",
    "StageDataConfig",
    "StageDefinition",
    "StageSwitchEvent",
    "SwitchStrategy",
    "Variant",
    "dump_json",
    "dump_yaml",
    "format_key",
    "load_model",
    "parse_document",
]
