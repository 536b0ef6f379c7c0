"""Stage plans: data_ratio categories, weights, and expected counts from real files."""

from __future__ import annotations

import json
from pathlib import Path

from stagewise.config import DatasetConfig
from stagewise.release import open_release
from stagewise.release.plan import category_of, count_samples, plan_stage, target_weights


def test_categories_match_by_name_prefix_and_others_catches_the_rest() -> None:
    categories = ["highway", "urban", "parking", "others"]
    assert category_of("highway_foundation_large", categories) == "highway"
    assert category_of("urban", categories) == "urban"
    assert category_of("urbanite_set", categories) == "others"  # a prefix must end at a separator
    assert category_of("toll_station", ["toll", "toll_station"]) == "toll_station"
    assert category_of("lake", ["highway"]) is None


def test_data_ratio_splits_a_category_among_its_datasets() -> None:
    config = DatasetConfig.model_validate(
        {
            "meta": {"stage_config": {"data_ratio": {"highway": 0.5, "urban": 0.5}}},
            "dataset_index": [
                {"name": "highway_a", "path": "a"},
                {"name": "highway_b", "path": "b"},
                {"name": "urban_c", "path": "c"},
            ],
        }
    )
    weights, source, _ = target_weights(config)
    assert source == "data_ratio" and weights == {
        "highway_a": 0.25,
        "highway_b": 0.25,
        "urban_c": 0.5,
    }


def test_preview_counts_the_example_files(repo: Path) -> None:
    release = open_release(repo)
    config, _ = release.load_dataset_config("stages/finetuning.json")
    plan = plan_stage(config, release.dataset_location)
    got = {d.name: (d.samples, d.expected) for d in plan.datasets}
    # supply / weight: toll 250 / 0.6 = 417, intersection 120 / 0.3 = 400 (binding), merge 60 / 0.1
    assert got == {
        "toll_station_scenarios_refined": (50, 240),
        "intersection_complex_cases": (40, 120),
        "merge_lane_cases": (30, 40),
    }
    assert plan.total == 400


def test_remote_and_missing_files_are_reported_not_counted(seed_repo: Path, tmp_path: Path) -> None:
    release = open_release(seed_repo)
    config, _ = release.load_dataset_config("stages/pretraining.json")
    plan = plan_stage(config, release.dataset_location)
    assert [d.note for d in plan.datasets] == ["remote: not counted (--count-remote)"] * 2
    assert plan.total is None
    assert count_samples(str(tmp_path / "missing.jsonl")) == (None, "file not found")


def test_count_samples_reads_jsonl_json_arrays_and_csv(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"x": 1}\n\n{"x": 2}\n{"x": 3}')
    (tmp_path / "b.json").write_text(json.dumps([1, 2, 3, 4]))
    (tmp_path / "c.csv").write_text("h1,h2\n1,2\n3,4\n")
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    assert count_samples(str(tmp_path / "a.jsonl")) == (3, None)
    assert count_samples(str(tmp_path / "b.json")) == (4, None)
    assert count_samples(str(tmp_path / "c.csv")) == (2, None)
    assert count_samples(str(tmp_path / "d.parquet")) == (None, "format not counted here")
