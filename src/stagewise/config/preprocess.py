"""``stagewise data preprocess`` settings: a YAML file, or the same names as flags.

The flag names are seed 004's (``--input_len``, ``--train_ratio``, ``--start_date``...);
a YAML config uses the same names as keys. A flag overrides the file.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from stagewise.config.base import FormatModel

_FREQ = re.compile(r"^\s*(\d+)\s*(s|sec|min|m|h|d)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "d": 86400}
_DATE = re.compile(r"^\d{8}$|^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?)?$")


def freq_seconds(value: str | int) -> int:
    """'5min', '15m', '1h', '300s' or 300 as seconds."""
    if isinstance(value, int):
        return value
    match = _FREQ.match(value)
    if not match:
        raise ValueError(
            f"expected a step such as 5min, 15min, 1h or 300 (seconds), found {value!r}"
        )
    return int(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "s").lower()]


class TimeSeriesSettings(FormatModel):
    """Seed 004's pipeline: raw records -> aligned series -> windows, patches and splits."""

    meta: str | None = Field(
        None,
        description="node metadata table (file, glob or URL) with a node id and coordinates; "
        "required for spatial patches",
    )
    node_column: str = Field("node", description="column of the node id, in records and metadata")
    time_column: str = Field(
        "timestamp",
        description="column of the reading time: an Arrow timestamp, an ISO text, or Unix seconds",
    )
    value_columns: list[str] = Field(
        default_factory=lambda: ["value"],
        min_length=1,
        description="columns that make the series' features, in order",
    )
    lat_column: str = Field("lat", description="latitude column of the metadata table")
    lng_column: str = Field("lng", description="longitude column of the metadata table")
    freq: str | int | None = Field(
        None,
        description="the series' step, e.g. 5min or 300 (seconds); default: the greatest "
        "common step of the timestamps",
    )
    start_date: str | None = Field(
        None,
        description="first day kept, YYYYMMDD or YYYY-MM-DD[ HH:MM]; default: the first record",
    )
    end_date: str | None = Field(
        None,
        description="last day kept (inclusive), YYYYMMDD or YYYY-MM-DD[ HH:MM]; default: the "
        "last record",
    )
    input_len: int = Field(12, ge=1, description="steps in a window's input (X)")
    output_len: int = Field(12, ge=0, description="steps in a window's target (Y)")
    train_ratio: float = Field(0.6, ge=0, le=1, description="share of the steps for training")
    val_ratio: float = Field(0.2, ge=0, le=1, description="share of the steps for validation")
    test_ratio: float = Field(0.2, ge=0, le=1, description="share of the steps for testing")
    require_sorted: bool = Field(
        False,
        description="records must come in time order (an export's promise): an out-of-order "
        "record is then an error naming it; by default any order is aligned correctly",
    )
    missing: Literal["zero", "nan", "ffill"] = Field(
        "zero",
        description="what a missing reading becomes: 0 (the seed's null value, masked in "
        "metrics), NaN, or the node's previous reading (0 before its first)",
    )
    patch_size: int = Field(
        32,
        ge=0,
        description="target nodes per spatial patch (KD-tree leaf); 0 turns patching off",
    )

    @field_validator("freq")
    @classmethod
    def _freq(cls, value: str | int | None) -> str | int | None:
        if value is not None and freq_seconds(value) <= 0:
            raise ValueError("the step must be above 0")
        return value

    @field_validator("start_date", "end_date")
    @classmethod
    def _date(cls, value: str | None) -> str | None:
        if value is not None and not _DATE.match(value):
            raise ValueError(f"expected YYYYMMDD or YYYY-MM-DD[ HH:MM], found {value!r}")
        return value

    @model_validator(mode="after")
    def _ratios(self) -> TimeSeriesSettings:
        total = self.train_ratio + self.val_ratio + self.test_ratio
        if abs(total - 1) > 1e-6:
            raise ValueError(
                f"train_ratio + val_ratio + test_ratio must be 1, found {total:g} "
                f"({self.train_ratio:g} + {self.val_ratio:g} + {self.test_ratio:g})"
            )
        return self


class PreprocessConfig(FormatModel):
    """One preprocess: where the records come from, what turns them into samples, where
    the store goes."""

    source: str | list[str] = Field(
        description="records: a file, glob, folder or URL (JSONL, CSV, Parquet, Arrow), a "
        "SQLAlchemy URL with query or table, or a list of JSONL files (seed 003's "
        "train_jsonl_list, records tagged by dataset_name)"
    )
    missing_files: Literal["warn", "error"] = Field(
        "warn",
        description="for a list of JSONL files: a missing file is skipped with a warning (the "
        "seed's behaviour) or is an error",
    )
    format: Literal["jsonl", "csv", "parquet", "arrow"] | None = Field(
        None, description="the source's format; default: from the file extension"
    )
    query: str | None = Field(None, description="SQL query, when source is a database URL")
    table: str | None = Field(None, description="SQL table, when source is a database URL")
    output: str = Field(description="the store's folder or URL prefix")
    transform: str = Field(
        "timeseries",
        description="'timeseries' (seed 004's pipeline), 'none' (rows as they are), or "
        "'module:function' taking and returning an Arrow record batch",
    )
    timeseries: TimeSeriesSettings = Field(
        default_factory=TimeSeriesSettings, description="settings of the timeseries transform"
    )
    split_column: str | None = Field(
        None,
        description="for row stores: the column naming each row's split (default: all 'train')",
    )
    batch_size: int = Field(
        65_536, ge=1, description="records read per chunk; bounds the memory of a preprocess"
    )
    on_error: Literal["raise", "skip"] = Field(
        "raise", description="a bad record stops the preprocess (raise) or is counted (skip)"
    )
