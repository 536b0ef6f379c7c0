"""The traffic example (examples/traffic/run.sh): the time-series model beats a last-value
and a seasonal (same time last week) baseline on the same test windows; and two bugs of the
trainer's forecasting path found while writing it (strict xfails)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import run_bash

ROOT = Path(__file__).parents[2]
WEEK = 2016  # five-minute steps


@pytest.mark.slow
def test_traffic_example_beats_both_baselines(tmp_path: Path) -> None:
    result = run_bash(str(ROOT / "examples" / "traffic" / "run.sh"), str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "model / last value" in out and "model / seasonal" in out
    assert "the model beats both baselines on MAE, RMSE" in out
    report = json.loads((tmp_path / "report.json").read_text())
    overall = report["overall"]
    for baseline in ("last_value", "seasonal"):
        for metric in ("mae", "rmse"):
            assert overall["model"][metric] < overall[baseline][metric], (baseline, metric)
    # Every test window of both cities, and the trainer's own evaluation of them.
    trained = json.loads((tmp_path / "train" / "result.json").read_text())
    assert report["windows"] == trained["final"]["final_eval_overall_samples"] == 2 * 1273
    assert overall["model"]["mae"] == trained["final"]["final_eval_overall_mae"]
    assert trained["best"] is None  # no model picked by its test-split score
    # The seasonal baseline again, straight from the store's series.
    from stagewise.data.samples import open_store

    store = open_store(tmp_path / "stores" / "beijing")
    series = store.array("series")
    test = store.split("test")
    starts = np.asarray(test.take(np.arange(len(test)))["start"])
    steps = starts[:, None] + 12 + np.arange(12)
    assert steps.min() >= WEEK
    mae = float(np.abs(series[steps - WEEK] - series[steps]).astype(np.float64).mean())
    assert report["datasets"]["beijing"]["seasonal"]["mae"] == pytest.approx(mae, rel=1e-6)


def test_training_on_a_store_with_nan_for_missing_readings_stays_finite(
    tmp_path: Path, one_thread: None
) -> None:
    from stagewise.config.training import TrainConfig
    from stagewise.train.recipe import train

    store = city_store(tmp_path, missing="nan", steps=576, seed=1)
    config = TrainConfig.model_validate(
        {
            "model": {"name": "timeseries", "num_labels": 1, "options": {"d_model": 16}},
            "datasets": {"dataset_configs": {"city": {}}},
            "data": {"train_stores": [store], "val_stores": [store]},
            "training": {
                "epochs": 1,
                "output_dir": str(tmp_path / "out"),
                "best_model_tracking": {"enabled": False},
                "evaluation": {"partial_eval_during_training": False},
            },
        }
    )
    result = train(config, echo=lambda _text: None)
    assert all(math.isfinite(v) for v in result.final.values()), result.final


def test_missing_targets_count_in_no_metric() -> None:
    """A missing target is NaN (a ``missing: zero`` store's zeros are read as NaN): the
    loss, MAE, RMSE and MAPE leave it out."""
    from stagewise.train.metrics import Tally

    tally = Tally(["city"], "forecasting")
    truth = torch.tensor([[[[math.nan]], [[10.0]]]])  # [1 sample, Q=2, N=1, C=1]: one missing
    guess = torch.tensor([[[[5.0]], [[12.0]]]])
    tally.add(torch.zeros(1, dtype=torch.long), torch.tensor([2.0]), guess, truth)
    overall = tally.overall()
    assert overall["mae"] == pytest.approx(2.0) and overall["rmse"] == pytest.approx(2.0)
    assert overall["mape"] == pytest.approx(0.2)


def test_a_zero_filled_stores_zeros_are_missing_targets(tmp_path: Path) -> None:
    from stagewise.config.training import TrainConfig
    from stagewise.data.samples import open_store
    from stagewise.train.data import read_store

    store = city_store(tmp_path, missing="zero", steps=400, seed=3)
    config = TrainConfig.model_validate(
        {
            "model": {"name": "timeseries", "num_labels": 1},
            "datasets": {"dataset_configs": {"city": {}}},
            "data": {"train_stores": [store]},
        }
    )
    table = read_store(store, config, split="train", task="forecasting", name="city")["city"]
    raw = np.asarray(open_store(store).split("train").take(np.arange(len(table)))["y"])
    assert np.isnan(table.targets).sum() == (raw == 0).sum() > 0
    assert np.array_equal(np.isnan(table.targets), raw == 0)


def city_store(tmp_path: Path, *, missing: str, steps: int, seed: int) -> str:
    """A two-sensor synthetic city, 5% of readings missing, preprocessed into a store."""
    from stagewise.config.preprocess import PreprocessConfig
    from stagewise.data.preprocess import preprocess
    from stagewise.data.synth import synth_traffic

    synth_traffic(tmp_path / "raw", nodes=2, steps=steps, missing=0.05, seed=seed)
    store = str(tmp_path / "city")
    source = str(tmp_path / "raw" / "records.parquet")
    config = {"source": source, "output": store}
    config["timeseries"] = {"missing": missing, "patch_size": 0}
    preprocess(PreprocessConfig.model_validate(config))
    return store
