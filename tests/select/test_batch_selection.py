"""Batch selection over router data files written by hand: counts, order, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from stagewise.errors import ConfigError, DataError
from stagewise.select.batch_selection import pick
from stagewise.select.scoring import quality_scores, weighted_gates
from tests.select.conftest import write_jsonl


def chat(dataset: str, i: int) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"q{i}"},
            {"role": "assistant", "content": f"a{i}"},
        ],
        "dataset": dataset,
        "id": f"{dataset}_{i}",
    }


def write_router(
    folder: Path, dataset: str, gates: list[float], data: Path, run: str = "run-1", layers: int = 2
) -> None:
    """One dataset's router data: sample i has every gate at gates[i] on 3 tokens."""
    n = len(gates)
    quality = torch.tensor(gates).view(n, 1, 1).expand(n, layers, 3).clone()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "quality_gates": quality,
            "perplexities": torch.ones(n, 3),
            "sample_ids": [f"{dataset}_{i}" for i in range(n)],
            "dataset_name": dataset,
            "num_samples": n,
            "max_seq_len": 3,
            "metadata": {"run_id": run, "data_files": [str(data)]},
        },
        folder / f"{dataset}_router_data.pt",
    )


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    data = write_jsonl(
        tmp_path / "data.jsonl",
        [chat("alpaca", i) for i in range(6)] + [chat("dolly", i) for i in range(4)],
    )
    root = tmp_path / "outputs" / "stage_2_selection" / "2025-10-23" / "12-00-00"
    write_router(root / "router_data", "alpaca", [0.9, 0.8, 0.7, 0.6, 0.55, 0.5], data)
    write_router(root / "router_data", "dolly", [0.4, 0.3, 0.2, 0.1], data)
    return root


def selected(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "selected_data.jsonl").read_text().splitlines()]


def test_global_scope_pools_the_datasets(experiment: Path) -> None:
    (result,) = pick(experiment.parents[2], 0.5, scope="global")
    lines = selected(experiment)
    assert [line["id"] for line in lines] == [f"alpaca_{i}" for i in range(5)]
    assert result.per_dataset == {"alpaca": (5, 6), "dolly": (0, 4)}
    assert lines[0] == {
        "dataset": "alpaca",
        "id": "alpaca_0",
        "scores": lines[0]["scores"],
        "messages": chat("alpaca", 0)["messages"],
    }
    assert [line["scores"] for line in lines] == sorted(
        (line["scores"] for line in lines), reverse=True
    )


def test_per_dataset_scope_keeps_the_share_of_each(experiment: Path) -> None:
    (result,) = pick(experiment, 0.5, scope="per_dataset")
    assert result.per_dataset == {"alpaca": (3, 6), "dolly": (2, 4)}
    ids = {line["id"] for line in selected(experiment)}
    assert ids == {"alpaca_0", "alpaca_1", "alpaca_2", "dolly_0", "dolly_1"}
    config = yaml.safe_load((experiment / "selection_config.yaml").read_text())
    assert config["scope"] == "per_dataset" and config["selected"] == 5 and config["total"] == 10
    assert config["per_dataset"]["dolly"] == {"selected": 2, "of": 4}


@pytest.mark.parametrize("percentage", [0.05, 0.25, 0.3, 1.0])
def test_the_count_is_the_ceiling_of_p_n(experiment: Path, percentage: float) -> None:
    (result,) = pick(experiment, percentage)
    assert result.selected == math.ceil(percentage * 10) == len(selected(experiment))


def test_the_scores_written_are_the_formulas(experiment: Path) -> None:
    pick(experiment, 1.0)
    data = [
        torch.load(experiment / "router_data" / f"{d}_router_data.pt", weights_only=True)
        for d in ("alpaca", "dolly")
    ]
    pooled = torch.cat([weighted_gates(d["quality_gates"], d["perplexities"]) for d in data])
    expected = quality_scores(pooled).tolist()
    got = {line["id"]: line["scores"] for line in selected(experiment)}
    ids = [*data[0]["sample_ids"], *data[1]["sample_ids"]]
    assert [got[i] for i in ids] == pytest.approx(expected)


@pytest.mark.parametrize("percentage", [0.0, -0.1, 1.5, True])
def test_a_percentage_outside_0_1_is_refused(experiment: Path, percentage: float) -> None:
    with pytest.raises(ConfigError, match=r"outside \(0, 1\]") as caught:
        pick(experiment, percentage)
    assert caught.value.location == "--percentage"
    assert not (experiment / "selected_data.jsonl").exists()


def test_router_files_of_different_runs_in_one_folder_are_refused(
    experiment: Path, tmp_path: Path
) -> None:
    write_router(experiment / "router_data", "flan", [0.5], tmp_path / "data.jsonl", run="run-2")
    with pytest.raises(DataError, match="different selection runs") as caught:
        pick(experiment, 0.5)
    assert caught.value.location == str(experiment / "router_data")
    assert "flan_router_data.pt: run run-2" in (caught.value.hint or "")
    assert "alpaca_router_data.pt: run run-1" in (caught.value.hint or "")


def test_a_model_with_other_layers_is_refused(experiment: Path, tmp_path: Path) -> None:
    write_router(experiment / "router_data", "flan", [0.5], tmp_path / "data.jsonl", layers=3)
    with pytest.raises(DataError, match="different layer counts"):
        pick(experiment, 0.5)


def test_a_foreign_file_in_router_data_is_named(experiment: Path) -> None:
    torch.save({"weights": torch.zeros(1)}, experiment / "router_data" / "x_router_data.pt")
    with pytest.raises(DataError, match="not a router data file: no quality_gates") as caught:
        pick(experiment, 0.5)
    assert caught.value.location == str(experiment / "router_data" / "x_router_data.pt")
    (experiment / "router_data" / "x_router_data.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="cannot read router data"):
        pick(experiment, 0.5)


def test_records_missing_from_the_data_are_named(experiment: Path, tmp_path: Path) -> None:
    other = write_jsonl(tmp_path / "other.jsonl", [chat("alpaca", i) for i in range(6)])
    with pytest.raises(
        DataError, match="record 'dolly_0' of dataset 'dolly' is not in the data"
    ) as caught:
        pick(experiment, 1.0, data=[str(other)])
    assert "--data" in (caught.value.hint or "")


def test_no_router_data_under_the_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no router_data") as caught:
        pick(tmp_path, 0.5)
    assert "stagewise select score" in (caught.value.hint or "")


def test_each_experiment_under_a_root_is_selected_on_its_own(
    experiment: Path, tmp_path: Path
) -> None:
    second = experiment.parent / "13-00-00"
    write_router(second / "router_data", "alpaca", [0.1, 0.9], tmp_path / "data.jsonl", run="run-9")
    results = pick(experiment.parents[2], 0.5)
    assert [(r.experiment, r.selected) for r in results] == [(experiment, 5), (second, 1)]
    assert [line["id"] for line in selected(second)] == ["alpaca_1"]
    with pytest.raises(DataError, match="2 experiments"):
        pick(experiment.parents[2], 0.5, out=tmp_path / "one")
