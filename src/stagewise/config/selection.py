"""Seed 001's three stage configs: ``stage_1_warmup.yaml``, ``stage_2_selection.yaml``,
``stage_3_finetune.yaml``.

The keys are the seed's (``stage``, ``selector_model.path``, ``model_checkpoint_path``,
``dataset.subset_ratio``, ``data_process.batch_size``, ``training.peft_mode``, ...), plus
what a run on files needs: ``dataset.data_path`` (JSONL files of chat records) and
``output_dir``. Overrides use Hydra's grammar, as in the seed's commands:
``stagewise select warmup stage_1_warmup.yaml training.learning_rate=1e-3``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from stagewise.config.base import FormatModel, load_config_file
from stagewise.config.training import Float
from stagewise.errors import Problem

PathList = list[str]
DEVICE = r"^(auto|cpu|cuda(:\d+)?)$"


class SelectorModelSection(FormatModel):
    path: str = Field(
        description="a converted Quality-Gate model folder (written by 'stagewise select "
        "convert BASE OUT')"
    )
    gate_mode: Literal["scale_ffn", "probe"] | None = Field(
        None,
        description="override the mode the model was converted with: scale_ffn (each layer's "
        "MLP output is multiplied by its gate) or probe (the gate only reads)",
    )


class SelectionDataset(FormatModel):
    dataset_from: Literal["local", "hf"] = Field(
        "local",
        description="local: JSONL files (data_path). hf (the seed's hub datasets) is not "
        "fetched by stagewise: download them and list the files in data_path",
    )
    data_path: str | PathList = Field(
        default_factory=list,
        description="JSONL files (or globs) of chat records: {messages, dataset, id}, or "
        "OpenHermes-style {conversations}; a record without 'dataset' takes its file's name",
    )
    target_path: str | PathList = Field(
        default_factory=list,
        description="JSONL files of the target task (their records count as is_target_task: "
        "true); used whole by the warmup, whatever subset_ratio says",
    )
    subset_ratio: Float = Field(
        1.0, gt=0, le=1, description="share of each dataset used (a seeded sample)"
    )
    shuffle: bool = Field(True, description="shuffle the training order every epoch")
    sort_by_length: bool = Field(
        False,
        description="batch records in descending order of their token count (less padding; "
        "turns shuffling off). The seed sorts by characters; tokens are what pads",
    )
    max_seq_len: int = Field(1024, ge=8, description="tokens kept per record (truncation)")
    mode: Literal["subset", "full"] = Field(
        "subset",
        description="finetune only: subset trains on data_path as selected_data.jsonl; full "
        "trains on every record of data_path",
    )

    @field_validator("data_path", "target_path")
    @classmethod
    def _as_list(cls, value: str | PathList) -> PathList:
        return [value] if isinstance(value, str) else value


class LoopSettings(FormatModel):
    learning_rate: Float = Field(3e-4, gt=0, description="AdamW's peak learning rate")
    batch_size: int = Field(
        16, ge=1, description="samples per optimizer step, over all processes together"
    )
    per_device_batch_size: int | None = Field(
        None,
        ge=1,
        description="samples per forward pass on one device; batch_size / (this x processes) "
        "gradient accumulation steps (default: batch_size / processes)",
    )
    epochs: Float = Field(2, gt=0, description="passes over the data (may be fractional)")
    max_steps: int | None = Field(
        None, ge=1, description="stop after this many optimizer steps (overrides epochs)"
    )
    weight_decay: Float = Field(0.0, ge=0, description="AdamW weight decay")
    scheduler: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="learning-rate decay after the warm-up"
    )
    warmup_ratio: Float = Field(0.0, ge=0, lt=1, description="share of steps spent warming up")
    max_grad_norm: Float = Field(1.0, ge=0, description="gradient clipping (0: off)")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16 runs the forward pass under bf16 autocast"
    )
    device: str = Field(
        "auto",
        pattern=DEVICE,
        description="auto (cuda when there is one), cpu, cuda (under torchrun: each "
        "process its LOCAL_RANK's GPU) or cuda:N",
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass (saves memory)"
    )
    log_every: int = Field(10, ge=1, description="print and log the loss every N steps")
    save_steps: int | None = Field(
        None,
        ge=1,
        description="write a resumable checkpoint-<step>/ every N steps (default: each epoch)",
    )
    keep_checkpoints: int = Field(2, ge=1, description="resumable checkpoints kept")


class WarmupTraining(LoopSettings):
    peft_mode: Literal["full_rank", "lora"] = Field(
        "full_rank",
        description="full_rank trains the gate weights only (saved as full_rank_weights.pt); "
        "lora puts LoRA adapters (r 16, alpha 64) on the gates",
    )
    quality_loss_weight: Float = Field(
        1.0, ge=0, description="lambda: loss = CE + lambda * quality loss"
    )
    quality_loss_balance: Float = Field(
        1.0,
        ge=0,
        le=2,
        description="beta of the balanced quality loss beta(1-y)g + (2-beta)y(1-g), y = "
        "is_target_task; with no target records and beta 1 it is the mean gate",
    )
    sample_wise_averaging: bool = Field(
        True,
        description="average gates per sample, then over samples (false: over all tokens)",
    )
    quality_loss_debug: bool = Field(False, description="print per-layer gate statistics")
    lora_r: int = Field(16, ge=1, description="LoRA rank on the gates (peft_mode: lora)")
    lora_alpha: int = Field(64, ge=1, description="LoRA alpha on the gates")
    full_sequence_prediction: bool = Field(
        True,
        description="loss on every token but the role tags (false: on the assistant turns only)",
    )


class WarmupConfig(FormatModel):
    """``stage_1_warmup.yaml``: warm up the quality gates of a converted model."""

    stage: Literal["warmup"] = Field("warmup", description="the seed's stage name")
    seed: int = Field(42, description="seeds the data subset, the order and the weights")
    output_dir: str | None = Field(
        None,
        description="where the results go (default: outputs/stage_1_warmup/<date>/<time>-"
        "<overrides>/); a folder holding checkpoints of this run is resumed",
    )
    selector_model: SelectorModelSection = Field(description="the model whose gates are trained")
    dataset: SelectionDataset = Field(description="the chat records to train on")
    training: WarmupTraining = Field(default_factory=WarmupTraining, description="the loop")

    @model_validator(mode="after")
    def _has_data(self) -> WarmupConfig:
        _require_data(self.dataset)
        return self


class DataProcess(FormatModel):
    batch_size: int = Field(32, ge=1, description="records per forward pass")


class ScoreConfig(FormatModel):
    """``stage_2_selection.yaml``: per-token gates and perplexities of every record."""

    stage: Literal["selection"] = Field("selection", description="the seed's stage name")
    seed: int = Field(42, description="seeds the data subset")
    output_dir: str | None = Field(
        None,
        description="where router_data/ goes (default: outputs/stage_2_selection/<date>/"
        "<time>-<overrides>/); a folder with an unfinished run of the same inputs is resumed",
    )
    selector_model: SelectorModelSection = Field(description="the converted model")
    model_checkpoint_path: str | None = Field(
        None,
        description="the warmup's output folder, its full_rank_weights.pt, or a LoRA "
        "checkpoint folder (none: the gates as converted)",
    )
    dataset: SelectionDataset = Field(description="every record to score")
    data_process: DataProcess = Field(default_factory=DataProcess, description="batching")
    device: str = Field(
        "auto", pattern=DEVICE, description="auto (cuda when there is one), cpu or cuda[:N]"
    )
    precision: Literal["fp32", "bf16"] = Field("fp32", description="forward-pass precision")

    @model_validator(mode="after")
    def _has_data(self) -> ScoreConfig:
        _require_data(self.dataset)
        return self


class LoraSettings(FormatModel):
    r: int = Field(128, ge=1, description="LoRA rank")
    lora_alpha: int = Field(256, ge=1, description="LoRA alpha (scale alpha / r)")
    lora_dropout: Float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: PathList = Field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        description="module names that get adapters (Qwen and Llama: the attention and MLP "
        "projections)",
    )


class TargetModel(FormatModel):
    name: str = Field(
        description="a local Hugging Face causal LM folder (nothing is downloaded; the seed's "
        "'Qwen/Qwen2.5-1.5B' must be a folder here)"
    )


class FinetuneTraining(LoopSettings):
    model: TargetModel = Field(description="the model to finetune")
    peft_mode: Literal["lora", "full"] = Field(
        "lora", description="lora trains adapters (saved alone); full trains every weight"
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="the adapters")
    learning_rate: Float = Field(2e-5, gt=0, description="AdamW's peak learning rate")
    batch_size: int = Field(64, ge=1, description="samples per optimizer step, all processes")
    epochs: Float = Field(3, gt=0, description="passes over the data")
    scheduler: Literal["linear", "cosine", "constant"] = Field(
        "cosine", description="learning-rate decay after the warm-up"
    )
    warmup_ratio: Float = Field(0.03, ge=0, lt=1, description="share of steps warming up")
    full_sequence_prediction: bool = Field(
        False, description="loss on every token but the role tags (false: assistant turns only)"
    )
    fsdp: str = Field(
        "",
        description="the seed's FSDP setting; only '' for now: several processes under "
        "torchrun train with DDP (FSDP is not built yet)",
    )
    fsdp_transformer_layer_cls_to_wrap: str | None = Field(
        None, description="the seed's FSDP layer class; unused until FSDP is built"
    )

    @field_validator("fsdp")
    @classmethod
    def _no_fsdp_yet(cls, value: str) -> str:
        if value.strip():
            raise ValueError(
                "FSDP is not built yet: leave training.fsdp empty; under torchrun the "
                "finetune trains with DDP (LoRA adapters of a 1.5B model fit one GPU each)"
            )
        return value


class FinetuneConfig(FormatModel):
    """``stage_3_finetune.yaml``: LoRA-finetune the target model on the selection."""

    stage: Literal["finetune"] = Field("finetune", description="the seed's stage name")
    seed: int = Field(42, description="seeds the order and the adapters")
    output_dir: str | None = Field(
        None,
        description="where checkpoints go (default: outputs/stage_3_finetune/<date>/<time>-"
        "<overrides>/); a folder holding checkpoints of this run is resumed",
    )
    training: FinetuneTraining = Field(description="the model and the loop")
    dataset: SelectionDataset = Field(description="selected_data.jsonl, or the full data")

    @model_validator(mode="after")
    def _has_data(self) -> FinetuneConfig:
        _require_data(self.dataset)
        return self


def _require_data(dataset: SelectionDataset) -> None:
    if dataset.dataset_from == "hf":
        raise ValueError(
            "dataset.dataset_from: hf is not fetched by stagewise (nothing is downloaded at "
            "run time); download the dataset, write it as JSONL and list it in "
            "dataset.data_path with dataset_from: local"
        )
    if not dataset.data_path:
        raise ValueError("no data: list JSONL files of chat records in dataset.data_path")


SelectionStageConfig = WarmupConfig | ScoreConfig | FinetuneConfig


def load_stage_config(
    model: type[WarmupConfig] | type[ScoreConfig] | type[FinetuneConfig],
    path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
) -> tuple[SelectionStageConfig, list[Problem]]:
    """Read one of the three stage configs with Hydra-style overrides applied."""
    what = {
        WarmupConfig: "warmup config",
        ScoreConfig: "selection config",
        FinetuneConfig: "finetune config",
    }[model]
    return load_config_file(model, path, overrides, what=what)
