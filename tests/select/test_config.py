"""The seed's three stage configs, as written in seed 001, with the keys a run needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from stagewise.config.selection import FinetuneConfig, ScoreConfig, WarmupConfig, load_stage_config
from stagewise.errors import ConfigError

# The seed's stage files, verbatim, plus the data files (the seed reads them from a hub).
STAGE_1 = """\
stage: warmup
selector_model:
  path: "converted_models/quality_gate_Qwen3-1.7B"
dataset:
  dataset_from: "hf"  # "local" 或 "hf"
  subset_ratio: 0.025
training:
  peft_mode: "full_rank"
  learning_rate: 3e-4
  batch_size: 16
  quality_loss_weight: 1.0
"""
STAGE_2 = """\
stage: selection
selector_model:
  path: "converted_models/quality_gate_Qwen2.5-1.5B"
model_checkpoint_path: "outputs/stage_1_warmup/.../full_rank_weights.pt"
dataset:
  subset_ratio: 1.0  # 使用全量数据
  sort_by_length: true
data_process:
  batch_size: 32
"""
STAGE_3 = """\
stage: finetune
training:
  model:
    name: "Qwen/Qwen2.5-1.5B"
  peft_mode: "lora"
  lora:
    r: 128
    lora_alpha: 256
dataset:
  mode: "subset"
  data_path: "outputs/stage_2_selection/.../selected_data.jsonl"
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_seeds_warmup_config_with_local_data(tmp_path: Path) -> None:
    path = write(tmp_path, "stage_1_warmup.yaml", STAGE_1)
    config, warnings = load_stage_config(
        WarmupConfig,
        path,
        ["dataset.dataset_from=local", "dataset.data_path=[data/openhermes.jsonl]"],
    )
    assert warnings == []
    assert config.training.learning_rate == 3e-4 and config.training.peft_mode == "full_rank"
    assert config.dataset.subset_ratio == 0.025 and config.dataset.data_path == [
        "data/openhermes.jsonl"
    ]
    assert config.training.epochs == 2 and config.seed == 42


def test_hub_datasets_are_refused_with_the_way_to_local_files(tmp_path: Path) -> None:
    path = write(tmp_path, "stage_1_warmup.yaml", STAGE_1)
    with pytest.raises(ConfigError) as caught:
        load_stage_config(WarmupConfig, path)
    text = caught.value.render()
    assert "dataset_from: hf is not fetched" in text and "dataset.data_path" in text


def test_the_seeds_selection_and_finetune_configs(tmp_path: Path) -> None:
    score, _ = load_stage_config(
        ScoreConfig, write(tmp_path, "s2.yaml", STAGE_2), ["dataset.data_path=[a.jsonl]"]
    )
    assert score.data_process.batch_size == 32 and score.dataset.sort_by_length
    assert score.model_checkpoint_path == "outputs/stage_1_warmup/.../full_rank_weights.pt"
    tune, _ = load_stage_config(FinetuneConfig, write(tmp_path, "s3.yaml", STAGE_3))
    assert (tune.training.lora.r, tune.training.lora.lora_alpha) == (128, 256)
    assert tune.training.lora.target_modules[-1] == "down_proj"
    assert tune.dataset.data_path == ["outputs/stage_2_selection/.../selected_data.jsonl"]


def test_a_config_of_another_stage_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "s2.yaml", STAGE_2)
    with pytest.raises(ConfigError) as caught:
        load_stage_config(WarmupConfig, path, ["dataset.data_path=[a.jsonl]"])
    (problem,) = [p for p in caught.value.problems if p.key == "stage"]
    assert problem.line == 1 and "'warmup'" in problem.message


def test_bad_values_are_located_and_unknown_keys_warned(tmp_path: Path) -> None:
    text = STAGE_3 + "  subset_ratio: 1.5\nextra_key: 1\n"
    with pytest.raises(ConfigError) as caught:
        load_stage_config(FinetuneConfig, write(tmp_path, "bad.yaml", text))
    (problem,) = caught.value.problems
    assert problem.key == "dataset.subset_ratio" and problem.line == 12
    _, warnings = load_stage_config(
        FinetuneConfig, write(tmp_path, "ok.yaml", STAGE_3 + "extra_key: 1\n")
    )
    assert [w.message for w in warnings] == ["unknown key 'extra_key' is ignored"]
    with pytest.raises(ConfigError, match="could not be parsed"):
        load_stage_config(FinetuneConfig, write(tmp_path, "o.yaml", STAGE_3), ["training.lora=[1"])


def test_fsdp_is_refused_until_it_is_built(tmp_path: Path) -> None:
    text = STAGE_3.replace(
        '  peft_mode: "lora"\n', '  peft_mode: "lora"\n  fsdp: "full_shard auto_wrap"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_stage_config(FinetuneConfig, write(tmp_path, "s3.yaml", text))
    (problem,) = caught.value.problems
    assert problem.key == "training.fsdp" and "FSDP is not built yet" in problem.message
