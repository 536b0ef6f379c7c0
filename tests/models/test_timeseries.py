"""The timeseries model: forecasts synthetic traffic better than the last value, in the
target's shape and in batch order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stagewise.config.preprocess import PreprocessConfig
from stagewise.data.preprocess import preprocess
from stagewise.data.samples import SampleStore
from stagewise.data.synth import synth_traffic
from stagewise.errors import ConfigError
from stagewise.models import Batch, DatasetSpec, Group, build_model

SMALL = {"d_model": 32, "heads": 4, "layers": 1}
Columns = dict[str, np.ndarray]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> SampleStore:
    """A week of 5-minute readings of 4 nodes (daily peaks), windows of 12 steps in, 12 out."""
    root: Path = tmp_path_factory.mktemp("traffic")
    synth_traffic(root / "raw", nodes=4, steps=2016, missing=0.0, seed=1)
    config = PreprocessConfig(source=str(root / "raw" / "records.parquet"), output=str(root / "s"))
    return preprocess(config).store


def _split(store: SampleStore, name: str) -> Columns:
    split = store.split(name)
    return split.take(np.arange(len(split)))


def _spec(name: str, columns: Columns, keys: tuple[str, ...] = ("x", "te_x")) -> DatasetSpec:
    return DatasetSpec(name, 0, {k: tuple(columns[k].shape[1:]) for k in keys})


def _batch(*parts: tuple[int, np.ndarray, Columns]) -> Batch:
    """A batch of groups (dataset number, the rows they fill, their columns)."""
    size = sum(len(rows) for _, rows, _ in parts)
    dataset = torch.empty(size, dtype=torch.int64)
    target = torch.empty((size, *parts[0][2]["y"].shape[1:]))
    groups = []
    for number, rows, columns in parts:
        place = torch.from_numpy(rows)
        dataset[place] = number
        target[place] = torch.from_numpy(columns["y"])
        inputs = {k: torch.from_numpy(columns[k]) for k in ("x", "te_x") if k in columns}
        groups.append(Group(number, place, inputs))
    return Batch(size, groups, dataset, target)


def _whole(columns: Columns) -> Batch:
    return _batch((0, np.arange(len(columns["x"])), columns))


def test_beats_the_last_value_after_a_short_training(store: SampleStore) -> None:
    torch.manual_seed(0)
    train, test = _split(store, "train"), _split(store, "test")
    model = build_model(
        "timeseries", datasets=[_spec("traffic", train)], num_labels=0, options=SMALL
    )
    assert model.task == "forecasting"
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for epoch in range(3):
        order = np.random.default_rng(epoch).permutation(len(train["x"]))
        for start in range(0, len(order), 32):
            batch = _whole({k: v[order[start : start + 32]] for k, v in train.items()})
            loss = (model(batch) - batch.targets).abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    batch = _whole(test)
    with torch.no_grad():
        forecast = model(batch)
    assert forecast.shape == batch.targets.shape == (len(test["x"]), 12, 4, 1)
    last_value = torch.from_numpy(test["x"][:, -1:]).expand_as(batch.targets)
    baseline = (last_value - batch.targets).abs().mean().item()
    mae = (forecast - batch.targets).abs().mean().item()
    assert mae < 0.75 * baseline  # about 0.5 after 3 epochs, whatever the seed


def test_two_datasets_in_a_permuted_batch_give_permuted_outputs(store: SampleStore) -> None:
    torch.manual_seed(0)
    columns = _split(store, "val")
    first = {k: v[:4] for k, v in columns.items()}
    second = {k: v[10:12] for k, v in columns.items()}
    specs = [_spec("a", columns), _spec("b", columns)]
    model = build_model("timeseries", datasets=specs, num_labels=0, options=SMALL).eval()
    place = np.array([5, 0, 3, 1, 4, 2])  # sample k of the mixed batch sits at row place[k]
    with torch.no_grad():
        alone = torch.cat(
            [model(_batch((0, np.arange(4), first))), model(_batch((1, np.arange(2), second)))]
        )
        mixed = model(_batch((0, place[:4], first), (1, place[4:], second)))
    assert mixed.shape == (6, 12, 4, 1)
    torch.testing.assert_close(mixed[torch.from_numpy(place)], alone)


def test_horizon_time_features_and_missing_values(store: SampleStore) -> None:
    torch.manual_seed(0)
    columns = {k: v[:3].copy() for k, v in _split(store, "val").items()}
    columns["x"][0, 2:5, 1, 0] = np.nan  # missing readings (missing: nan)
    model = build_model(
        "timeseries",
        datasets=[_spec("a", columns, ("x",))],  # no time features
        num_labels=0,
        options={**SMALL, "horizon": 3},
    ).eval()
    columns["y"] = columns["y"][:, :3]
    with torch.no_grad():
        forecast = model(_whole({"x": columns["x"], "y": columns["y"]}))
    assert forecast.shape == (3, 3, 4, 1)
    assert torch.isfinite(forecast).all()
    # The horizon comes from a declared target where the trainer gives one.
    spec = DatasetSpec("b", 0, {"x": (12, 4, 1), "te_y": (6, 2)})
    model = build_model("timeseries", datasets=[spec], num_labels=0, options=SMALL)
    assert model.series["b"].horizon == 6


@pytest.mark.parametrize(
    ("options", "inputs", "match"),
    [
        ({"depth": 2}, {"x": (12, 4, 1)}, "unknown timeseries option"),
        ({"d_model": 30, "heads": 4}, {"x": (12, 4, 1)}, "not a multiple of heads"),
        ({"layers": 0}, {"x": (12, 4, 1)}, "expected a positive integer"),
        ({}, {"x": (12, 4)}, r"an 'x' window \[P, N, C\]"),
        ({}, {"x": (12, 4, 1), "te_x": (11, 2)}, r"'te_x' time features \[P, 2\]"),
        ({"input_column": "window"}, {"x": (12, 4, 1)}, "an 'window' window"),
    ],
)
def test_bad_options_and_inputs_are_config_errors(options: dict, inputs: dict, match: str) -> None:
    spec = DatasetSpec("traffic", 0, inputs)
    with pytest.raises(ConfigError, match=match) as caught:
        build_model("timeseries", datasets=[spec], num_labels=0, options=options)
    assert caught.value.location.startswith("model.")
    if "unknown" in match:
        assert "d_model, day_slots, dropout, heads" in (caught.value.hint or "")


def test_pretrained_weights_are_refused() -> None:
    spec = DatasetSpec("traffic", 0, {"x": (12, 4, 1)})
    with pytest.raises(ConfigError, match="no pretrained weights") as caught:
        build_model("timeseries", datasets=[spec], num_labels=0, pretrained="/a/folder")
    assert caught.value.location == "model.pretrained_name"


def test_a_horizon_that_differs_from_the_targets_is_named(store: SampleStore) -> None:
    columns = {k: v[:2] for k, v in _split(store, "val").items()}
    model = build_model(
        "timeseries",
        datasets=[_spec("a", columns)],
        num_labels=0,
        options={**SMALL, "horizon": 6},
    )
    with pytest.raises(ConfigError, match=r"forecasts \[6, 4, 1\] .* targets are \[12, 4, 1\]"):
        model(_whole(columns))


def test_the_trainer_tells_the_model_the_horizon_of_its_store(tmp_path: Path) -> None:
    from stagewise.config.training import TrainConfig
    from stagewise.train.data import Split, dataset_specs, read_store

    synth_traffic(tmp_path / "raw", nodes=3, steps=600, missing=0.0)
    config = PreprocessConfig.model_validate(
        {
            "source": str(tmp_path / "raw" / "records.parquet"),
            "output": str(tmp_path / "traffic"),
            "timeseries": {"input_len": 12, "output_len": 3},
        }
    )
    preprocess(config)
    location = str(tmp_path / "traffic")
    train = TrainConfig.model_validate(
        {
            "model": {"name": "timeseries", "num_labels": 1},
            "datasets": {"dataset_configs": {"traffic": {}}},
            "data": {"train_stores": [location]},
        }
    )
    tables = read_store(location, train, split="train", task="forecasting", name="traffic")
    specs = dataset_specs(["traffic"], [Split(tables)], train)
    model = build_model("timeseries", datasets=specs, num_labels=1, options=SMALL)
    assert model.series["traffic"].horizon == 3
