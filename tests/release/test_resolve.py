"""Resolution order of seed 000: FORCE_DATASET_CONFIG, TRAINING_STAGE (+AB_VARIANT),
active_stage.yaml, then the default training_dataset.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stagewise.errors import ConfigError, StageError, StageNotFoundError
from stagewise.release import open_release, switch


def names(resolution) -> list[str]:  # type: ignore[no-untyped-def]
    return [d.name for d in resolution.config.dataset_index]


def test_active_stage_is_used_when_no_variable_is_set(repo: Path) -> None:
    chosen = open_release(repo).resolve({})
    assert (chosen.rule, chosen.stage, chosen.config_file) == (
        "active_stage",
        "pretraining",
        "stages/pretraining.json",
    )
    assert names(chosen)[0] == "highway_foundation_large"


def test_training_stage_overrides_the_active_stage(repo: Path) -> None:
    chosen = open_release(repo).resolve({"TRAINING_STAGE": "finetuning"})
    assert (chosen.rule, chosen.stage) == ("TRAINING_STAGE", "finetuning")
    assert names(chosen) == [
        "toll_station_scenarios_refined",
        "intersection_complex_cases",
        "merge_lane_cases",
    ]


def test_force_dataset_config_wins_over_everything(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"TRAINING_STAGE": "finetuning", "FORCE_DATASET_CONFIG": "stages/evaluation.json"}
    chosen = open_release(repo).resolve(env)  # relative to the repo (not found in the working dir)
    assert chosen.rule == "FORCE_DATASET_CONFIG"
    assert chosen.stage == "finetuning"  # seed scenario 3: the stage is kept for reporting
    assert names(chosen) == ["eval_highway_benchmark", "eval_urban_benchmark"]

    custom = tmp_path / "custom_config.json"
    custom.write_text(json.dumps({"dataset_index": [{"name": "mine", "path": "/data/mine.jsonl"}]}))
    chosen = open_release(repo).resolve(
        {"FORCE_DATASET_CONFIG": "custom_config.json"}
    )  # working dir first
    assert names(chosen) == ["mine"] and chosen.config_file == str(custom)
    chosen = open_release(repo).resolve({"FORCE_DATASET_CONFIG": str(custom)})
    assert names(chosen) == ["mine"]


def test_force_dataset_config_missing_file_is_a_clear_error(repo: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as caught:
        open_release(repo).resolve({"FORCE_DATASET_CONFIG": "stages/nope.json"})
    assert "stages/nope.json" in str(caught.value)


def test_ab_variant_selects_the_variant(repo: Path) -> None:
    release = open_release(repo)
    chosen = release.resolve({"TRAINING_STAGE": "ab_testing", "AB_VARIANT": "variant_b"})
    assert (chosen.stage, chosen.variant, chosen.config_file) == (
        "ab_testing",
        "variant_b",
        "stages/ab_testing/variant_b.json",
    )
    with pytest.raises(StageError, match="no variant 'variant_c'"):
        release.resolve({"TRAINING_STAGE": "ab_testing", "AB_VARIANT": "variant_c"})


def test_variant_without_ab_variant_comes_from_the_run_id(repo: Path) -> None:
    release = open_release(repo)
    env = {"TRAINING_STAGE": "ab_testing"}
    with pytest.raises(StageError, match="one must be chosen"):
        release.resolve(env)
    first = release.resolve(env, run_id="run-1").variant
    assert first in ("variant_a", "variant_b")
    assert all(release.resolve(env, run_id="run-1").variant == first for _ in range(3))
    assert release.resolve({**env, "STAGEWISE_RUN_ID": "run-1"}).variant == first


def test_auto_follows_the_active_stage(repo: Path) -> None:
    release = open_release(repo)
    switch(release, "finetuning", reason="test")
    assert release.resolve({"TRAINING_STAGE": "auto"}).stage == "finetuning"


def test_auto_without_an_active_stage_uses_the_default_stage(repo: Path) -> None:
    (repo / "active_stage.yaml").unlink()
    chosen = open_release(repo).resolve({"TRAINING_STAGE": "auto"})
    assert (chosen.rule, chosen.stage) == ("default_stage", "pretraining")


def test_no_active_stage_falls_back_to_training_dataset_json(repo: Path) -> None:
    (repo / "active_stage.yaml").unlink()
    chosen = open_release(repo).resolve({})
    assert (chosen.rule, chosen.stage, chosen.config_file) == (
        "default",
        None,
        "training_dataset.json",
    )


def test_a_plain_training_dataset_json_repo_is_backward_compatible(
    tmp_path: Path, repo: Path
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(repo / "training_dataset.json", plain)
    release = open_release(plain)
    chosen = release.resolve({})
    assert (chosen.rule, chosen.stage) == ("default", None)
    assert names(chosen) == ["highway_foundation_large", "urban_scenarios_base"]
    assert release.stage_config is None
    with pytest.raises(StageError, match=r"no stage_config\.yaml"):
        release.resolve({"TRAINING_STAGE": "finetuning"})


def test_stage_config_path_names_the_repo(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"STAGE_CONFIG_PATH": str(repo / "stage_config.yaml")}
    release = open_release(env=env)
    assert release.root == repo
    assert release.resolve({"TRAINING_STAGE": "evaluation"}).stage == "evaluation"


def test_unknown_training_stage_suggests_the_near_name(repo: Path) -> None:
    with pytest.raises(StageNotFoundError, match="'finetunin' is not defined") as caught:
        open_release(repo).resolve({"TRAINING_STAGE": "finetunin"})
    assert "did you mean 'finetuning'" in (caught.value.hint or "")


def test_seed_example_repo_resolves_unchanged(seed_repo: Path) -> None:
    chosen = open_release(seed_repo).resolve({})
    assert (chosen.rule, chosen.stage) == ("active_stage", "pretraining")
    assert names(chosen) == ["highway_foundation_large", "urban_scenarios_base"]
    assert (
        chosen.config.dataset_index[0].obs_path
        == "obs://pretraining-data/highway_foundation_large.jsonl"
    )
    assert (
        open_release(seed_repo).resolve({"TRAINING_STAGE": "finetuning"}).config.meta.stage
        == "finetuning"
    )
