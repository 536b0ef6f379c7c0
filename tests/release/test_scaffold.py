"""`release init` and `release generate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stagewise.config import DatasetConfig, load_model, parse_document
from stagewise.errors import ConfigError
from stagewise.release.scaffold import (
    TEMPLATES,
    generate_from_base,
    init_repo,
    load_template,
    parse_ratios,
)


def load(path: Path) -> DatasetConfig:
    return load_model(DatasetConfig, parse_document(path.read_bytes(), str(path)))


def test_init_lays_out_the_seed_repo(repo: Path) -> None:
    for rel in [
        "training_dataset.json",
        "stage_config.yaml",
        "active_stage.yaml",
        "stages/pretraining.json",
        "stages/finetuning.json",
        "stages/evaluation.json",
        "stages/online_learning.json",
        "stages/ab_testing/variant_a.json",
        "stages/ab_testing/variant_b.json",
        ".gitignore",
    ]:
        assert (repo / rel).is_file(), rel
    assert len(list((repo / "data").glob("*.jsonl"))) == 10
    assert "{created_at}" not in (repo / "stages" / "pretraining.json").read_text()


def test_init_refuses_an_existing_repo_and_changes_nothing(repo: Path) -> None:
    before = (repo / "stage_config.yaml").read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        init_repo(repo)
    assert (repo / "stage_config.yaml").read_bytes() == before


def test_every_template_loads() -> None:
    for name in TEMPLATES:
        assert load_template(name, None).dataset_index


def test_generate_from_base_weights_datasets_by_category(repo: Path) -> None:
    config, notes = generate_from_base(
        load(repo / "training_dataset.json"),
        "pretraining",
        parse_ratios("highway:0.4,urban:0.3,parking:0.3"),
    )
    weights = {d.name: (d.enabled, d.stage_weight) for d in config.dataset_index}
    assert weights == {"highway_foundation_large": (True, 0.4), "urban_scenarios_base": (True, 0.3)}
    assert config.meta is not None and config.meta.stage == "pretraining"
    assert config.stage_config.data_ratio == {"highway": 0.4, "urban": 0.3, "parking": 0.3}
    assert notes == ["category 'parking' matches no dataset of the base config"]


@pytest.mark.parametrize("text", ["highway", "highway:x", "highway:-1", ":0.5", "", "a:0,b:0"])
def test_bad_ratios_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="ratio"):
        parse_ratios(text)


def test_a_repo_template_takes_precedence(repo: Path) -> None:
    (repo / "templates").mkdir()
    (repo / "templates" / "finetuning_template.json").write_text(
        json.dumps({"dataset_index": [{"name": "custom", "path": "data/custom.jsonl"}]})
    )
    assert [d.name for d in load_template("finetuning", repo).dataset_index] == ["custom"]
    with pytest.raises(ConfigError, match="no template named 'nope'"):
        load_template("nope", repo)


def test_init_never_overwrites_files_and_can_add_stages_to_a_plain_repo(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    mine = '{"dataset_index": [{"name": "mine", "path": "mine.jsonl"}]}'
    (plain / "training_dataset.json").write_text(mine)
    with pytest.raises(ConfigError, match=r"would be overwritten: training_dataset\.json"):
        init_repo(plain)
    assert sorted(p.name for p in plain.iterdir()) == ["training_dataset.json"]
    init_repo(plain, keep_existing=True)
    assert (plain / "training_dataset.json").read_text() == mine
    assert (plain / "stage_config.yaml").is_file()
