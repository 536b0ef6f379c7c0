"""Bad configs and bad records are clear errors, located, before anything trains."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from stagewise.config.training import load_training_config
from stagewise.errors import ConfigError, DataError
from stagewise.train.data import read_jsonl
from stagewise.train.evaluation import masked_logits
from stagewise.train.recipe import check_config
from tests.train.conftest import config_data, write_config, write_jsonl

SEED_CONFIG = """\
model:
  pretrained_name: "/path/to/Qwen2.5-VL-7B-Instruct"
  num_labels: 2000  # 所有数据集中的最大类别数

datasets:
  dataset_configs:
    food101:
      num_classes: 101
      description: "Food-101 dataset"
      eval_ratio: 0.2
    food2k:
      num_classes: 2000
      description: "Food2K dataset"
      eval_ratio: 0.1
  enable_logits_masking: true
  shuffle_datasets: true

data:
  train_jsonl_list:
    - "/data/food101/train.jsonl"
  val_jsonl_list:
    - "/data/food101/test.jsonl"

training:
  epochs: 5
  lr: 1e-5
  output_dir: "/output/multi_datasets_1e_5"
  best_model_tracking:
    enabled: true
    metric: "overall_accuracy"
    mode: "max"
    save_best_only: true
  evaluation:
    partial_eval_during_training: true
    full_eval_at_end: true
    eval_best_model_only: true

wandb:
  enabled: true
  project: "qwen_multi_datasets"
  log_dataset_metrics: true
  log_overall_metrics: true
"""


def test_the_seeds_config_is_accepted_as_written(tmp_path: Path) -> None:
    config, warnings = load_training_config(write_text(tmp_path / "c.yaml", SEED_CONFIG))
    assert warnings == []
    assert config.training.lr == pytest.approx(1e-5)  # YAML reads 1e-5 as text
    assert config.datasets.dataset_configs["food2k"].eval_ratio == 0.1
    assert config.model.num_labels == 2000 and config.wandb.project == "qwen_multi_datasets"
    check_config(config, "classification")


def test_overrides_use_hydras_grammar(tmp_path: Path) -> None:
    path = write_text(tmp_path / "c.yaml", SEED_CONFIG)
    config, _ = load_training_config(path, ["training.lr=3e-4", "training.epochs=2"])
    assert (config.training.lr, config.training.epochs) == (3e-4, 2)
    with pytest.raises(ConfigError, match="override"):
        load_training_config(path, ["training.nope=1"])


def test_num_labels_below_a_datasets_classes_is_refused(tmp_path: Path) -> None:
    path = write_text(tmp_path / "c.yaml", SEED_CONFIG)
    config, _ = load_training_config(path, ["model.num_labels=1000"])
    with pytest.raises(ConfigError) as caught:
        check_config(config, "classification")
    text = caught.value.render()
    assert "food2k has 2000 classes but model.num_labels is 1000" in text
    assert "datasets.dataset_configs.food2k.num_classes" in text


def test_an_unknown_best_model_metric_lists_the_known_ones(tmp_path: Path) -> None:
    path = write_text(tmp_path / "c.yaml", SEED_CONFIG)
    config, _ = load_training_config(path, ["training.best_model_tracking.metric=food3k_accuracy"])
    with pytest.raises(ConfigError) as caught:
        check_config(config, "classification")
    assert "food101_accuracy" in caught.value.render()
    with pytest.raises(ConfigError, match="best_model_tracking"):
        load_training_config(path, ["training.best_model_tracking.metric=accuracy"])


def test_unknown_keys_are_warnings_with_their_line(tmp_path: Path) -> None:
    text = SEED_CONFIG.replace("  epochs: 5\n", "  epochs: 5\n  epoch: 3\n")
    _, warnings = load_training_config(write_text(tmp_path / "c.yaml", text))
    assert len(warnings) == 1 and "did you mean 'epochs'" in warnings[0].render()
    assert warnings[0].line == 26


def _config(tmp_path: Path, files: list[str], **data: object):  # type: ignore[no-untyped-def]
    raw = config_data({"train": files, "val": []}, tmp_path / "out")
    raw["data"].update(data)
    config, _ = load_training_config(write_config(tmp_path / "c.yaml", raw))
    return config


def test_every_bad_record_is_named_by_file_and_line(tmp_path: Path) -> None:
    good = {"features": [1.0, 2.0], "label": 0, "dataset_name": "iris"}
    path = tmp_path / "train.jsonl"
    path.write_text(
        "\n".join(
            [
                '{"features": [1.0, 2.0], "label": 0, "dataset_name": "iris"}',
                '{"features": [1.0, 2.0], "label": 1001, "dataset_name": "iris"}',
                "{not json",
                '{"features": [1.0, 2.0], "label": 0, "dataset_name": "food3k"}',
                '{"features": [1.0], "label": 1, "dataset_name": "iris"}',
                '{"features": [1.0, 2.0], "label": "cat", "dataset_name": "iris"}',
                '{"features": [1.0, 2.0], "label": 2}',
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    assert good
    config = _config(tmp_path, [str(path)])
    with pytest.raises(DataError) as caught:
        read_jsonl([str(path)], config, "training")
    problems = {p.line: p.message for p in caught.value.problems}
    assert set(problems) == {2, 3, 4, 5, 6, 7}
    assert "label 1001 is out of range for dataset 'iris'" in problems[2]
    assert "not valid JSON" in problems[3]
    assert "'food3k' has no entry in datasets.dataset_configs" in problems[4]
    assert "shape [1] here but [2]" in problems[5]
    assert "'cat'" in problems[6]
    assert "no 'dataset_name'" in problems[7]
    assert all(p.file == str(path) for p in caught.value.problems)
    assert "Target 1001 is out of bounds" not in caught.value.render()


def test_a_missing_file_is_skipped_with_the_seeds_warning_or_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    present = write_jsonl(
        tmp_path / "a.jsonl", [{"features": [1.0], "label": 0, "dataset_name": "iris"}]
    )
    missing = str(tmp_path / "missing.jsonl")
    config = _config(tmp_path, [str(present), missing])
    with caplog.at_level(logging.WARNING, logger="stagewise.train"):
        split = read_jsonl([str(present), missing], config, "training")
    assert split.total == 1
    assert f"跳过不存在的文件: {missing}" in caplog.text
    strict = _config(tmp_path, [str(present), missing], missing_files="error")
    with pytest.raises(DataError) as caught:
        read_jsonl([str(present), missing], strict, "training")
    assert caught.value.problems[0].file == missing


def test_masked_logits_never_predict_outside_a_datasets_classes() -> None:
    logits = torch.tensor([[0.0, 1.0, 9.0, 5.0], [9.0, 0.0, 0.0, 1.0]])
    masked = masked_logits(logits, torch.tensor([0, 1]), torch.tensor([2, 4]))
    assert masked.argmax(-1).tolist() == [1, 0]
    assert masked[1].tolist() == logits[1].tolist()  # dataset 1 has every class
    assert torch.softmax(masked, -1)[0, 2:].sum() == 0


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_a_key_with_a_default_is_set_without_a_plus(tmp_path: Path) -> None:
    """As Hydra over a structured config: training.batch_size is declared, so it can be
    set though the file does not write it; a key no schema declares still needs '+'."""
    path = write_text(tmp_path / "c.yaml", SEED_CONFIG)
    config, _ = load_training_config(
        path,
        [
            "training.batch_size=64",
            "tracking.tensorboard=true",
            "datasets.dataset_configs.food101.eval_ratio=0.5",
        ],
    )
    assert config.training.batch_size == 64 and config.tracking.tensorboard is True
    assert config.datasets.dataset_configs["food101"].eval_ratio == 0.5
    with pytest.raises(ConfigError, match=r"\+training.nope"):
        load_training_config(path, ["training.nope=1"])
