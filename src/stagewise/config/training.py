"""The training config: seed 003's ``multi_datasets_config.yaml``, plus what stagewise adds.

The seed's keys are accepted exactly as written: ``model`` (pretrained_name, num_labels),
``datasets`` (dataset_configs with num_classes / description / eval_ratio,
enable_logits_masking, shuffle_datasets), ``data`` (train_jsonl_list, val_jsonl_list),
``training`` (epochs, lr, output_dir, best_model_tracking, evaluation) and ``wandb``.

stagewise adds: ``model.name`` (which model to build), ``release`` (train on what a data
release repo's stages decide), ``data.train_stores``/``val_stores`` (sample stores as well
as JSONL), batch sizes, seed, checkpointing and the other trackers (``tracking``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from stagewise.config.base import FormatModel
from stagewise.errors import Problem

_METRIC = re.compile(r"^(overall|[A-Za-z0-9][A-Za-z0-9_.\-]*?)_(accuracy|loss|mae|rmse|mape)$")


def _float(value: Any) -> Any:
    """YAML 1.1 reads ``1e-5`` (no dot) as text; the seed writes ``lr: 1e-5``."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"expected a number such as 1e-5 or 0.001, found {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, found {value!r}")
    return float(value)


Float = Annotated[float, BeforeValidator(_float)]


class ModelSection(FormatModel):
    pretrained_name: str | None = Field(
        None,
        description="a local model folder to load weights from (hf: models only; nothing is "
        "downloaded). Leave it out to start from random weights",
    )
    num_labels: int = Field(
        ge=1, description="size of the shared classification head: the largest num_classes"
    )
    name: str = Field(
        "mlp",
        description="the model to build: mlp (tabular features), cnn (small images), "
        "timeseries (windowed series, forecasting), or hf:<AutoModel class> such as "
        "hf:AutoModelForSequenceClassification",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="the model's own settings (mlp: hidden, layers, dropout; cnn: channels, "
        "dropout; timeseries: d_model, heads, layers, dropout, horizon; hf: the config's "
        "keys, e.g. model_type, hidden_size, num_hidden_layers); see docs/concepts/models.md",
    )


class DatasetSettings(FormatModel):
    num_classes: int | None = Field(
        None,
        ge=1,
        description="classes of this dataset; labels run 0..n-1 (required for classification; "
        "forecasting datasets leave it out)",
    )
    description: str | None = Field(None, description="free text")
    eval_ratio: Float = Field(
        1.0,
        gt=0,
        le=1,
        description="share of this dataset's eval split used by the partial evaluation "
        "during training (a fixed, seeded subset); the full evaluation uses all of it",
    )


class DatasetsSection(FormatModel):
    dataset_configs: dict[str, DatasetSettings] = Field(
        description="one entry per dataset, by the dataset_name its records carry"
    )
    enable_logits_masking: bool = Field(
        True,
        description="mask each sample's logits beyond its dataset's num_classes before the "
        "loss and the prediction",
    )
    shuffle_datasets: bool = Field(
        True, description="mix all datasets and shuffle them (seeded) every epoch"
    )


class DataSection(FormatModel):
    train_jsonl_list: list[str] = Field(
        default_factory=list,
        description="JSON-lines files of training records: label, dataset_name and the "
        "model's input (features, image or input_ids)",
    )
    val_jsonl_list: list[str] = Field(
        default_factory=list, description="JSON-lines files of evaluation records"
    )
    train_stores: list[str] = Field(
        default_factory=list,
        description="sample stores (folders or URLs) read as training data; the dataset "
        "name is each record's dataset_name column, else the store's name",
    )
    val_stores: list[str] = Field(
        default_factory=list, description="sample stores read as evaluation data"
    )
    missing_files: Literal["skip", "error"] = Field(
        "skip",
        description="a listed file that does not exist: 'skip' it with the seed's warning, "
        "or 'error' before training starts",
    )
    label_key: str = Field("label", description="the record key holding the label")
    dataset_key: str = Field("dataset_name", description="the record key naming the dataset")


class ReleaseSection(FormatModel):
    path: str = Field(
        description="the data release repo (a folder or URL) whose stages decide the data"
    )
    stage: str | None = Field(
        None,
        description="the stage to train on; default: TRAINING_STAGE, then the repo's active "
        "stage. 'auto' starts at the active (or default) stage and switches stages by the "
        "repo's auto_switch_conditions every epoch",
    )
    variant: str | None = Field(None, description="the A/B variant; default: AB_VARIANT")
    train_split: str = Field("train", description="the split of each stage dataset to train on")
    val_split: str = Field("test", description="the split of each stage dataset to evaluate on")


class BestModelTracking(FormatModel):
    enabled: bool = Field(True, description="track the best model during training")
    metric: str = Field(
        "overall_accuracy",
        description="overall_accuracy, overall_loss, <dataset>_accuracy or <dataset>_loss "
        "(forecasting: also _mae, _rmse, _mape)",
    )
    mode: Literal["max", "min"] = Field("max", description="max or min")
    save_best_only: bool = Field(
        True, description="keep only the best model's weights, not every evaluation's"
    )

    @field_validator("metric")
    @classmethod
    def _metric_shape(cls, value: str) -> str:
        if not _METRIC.match(value):
            raise ValueError(
                f"expected overall_accuracy, overall_loss, <dataset>_accuracy or "
                f"<dataset>_loss, found {value!r}"
            )
        return value


class EvaluationSettings(FormatModel):
    partial_eval_during_training: bool = Field(
        True, description="evaluate on each dataset's eval_ratio subset during training"
    )
    full_eval_at_end: bool = Field(
        True, description="evaluate on all the eval data when training ends"
    )
    eval_best_model_only: bool = Field(
        True,
        description="the full evaluation covers the best model only; false: every saved checkpoint",
    )


class TrainingSection(FormatModel):
    epochs: int = Field(1, ge=1, description="passes over the training data")
    lr: Float = Field(1e-3, gt=0, description="learning rate (AdamW)")
    output_dir: str = Field(
        "outputs/train", description="where checkpoints, metrics and the best model go"
    )
    batch_size: int = Field(32, ge=1, description="samples per step on each process")
    eval_batch_size: int | None = Field(
        None, ge=1, description="samples per evaluation step; default: 4 x batch_size"
    )
    weight_decay: Float = Field(0.01, ge=0, description="AdamW weight decay")
    warmup_ratio: Float = Field(
        0.0, ge=0, lt=1, description="share of steps with a linear learning-rate warm-up"
    )
    scheduler: Literal["constant", "linear", "cosine"] = Field(
        "cosine", description="learning-rate schedule after the warm-up"
    )
    max_grad_norm: Float | None = Field(
        1.0, gt=0, description="clip the gradients' norm to this; null: no clipping"
    )
    seed: int = Field(0, description="seeds the model, the data order and the eval subsets")
    eval_every: int | None = Field(
        None,
        ge=1,
        description="steps between partial evaluations; default: once per epoch",
    )
    log_every: int = Field(20, ge=1, description="steps between training-metric logs")
    checkpoint_every: int | None = Field(
        None,
        ge=1,
        description="steps between resumable checkpoints; default: at each evaluation and "
        "each epoch's end",
    )
    keep_checkpoints: int = Field(
        2, ge=1, description="resumable checkpoints kept (the newest); the best model is apart"
    )
    drop_last: bool | None = Field(
        None,
        description="drop each epoch's last, partial batch; default: only in distributed runs, "
        "where every rank must take the same number of steps",
    )
    device: str = Field("auto", description="auto (cuda if available), cpu, cuda or cuda:N")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="autocast precision of the forward pass: fp32, bf16 (CPUs and GPUs) or "
        "fp16 (GPUs, with loss scaling); tested on CPU in bf16, untested on GPU here",
    )
    strategy: Literal["auto", "ddp", "fsdp", "deepspeed"] = Field(
        "auto",
        description="distributed strategy under torchrun: auto (DDP when world size > 1), "
        "ddp, fsdp (GPU), or deepspeed (pass-through of deepspeed_config, GPU)",
    )
    deepspeed_config: str | None = Field(
        None, description="a DeepSpeed JSON config, passed through as the seed's command does"
    )
    best_model_tracking: BestModelTracking = Field(
        default_factory=BestModelTracking, description="which evaluation's model is the best"
    )
    evaluation: EvaluationSettings = Field(
        default_factory=EvaluationSettings, description="partial and full evaluation"
    )


class WandbSection(FormatModel):
    enabled: bool = Field(False, description="log to Weights & Biases")
    project: str = Field("stagewise", description="the W&B project")
    log_dataset_metrics: bool = Field(True, description="log the per-dataset metrics")
    log_overall_metrics: bool = Field(True, description="log the overall metrics")
    mode: Literal["offline", "online"] | None = Field(
        None,
        description="offline writes the run under output_dir/wandb (sync it later with "
        "'wandb sync'); online needs the network and a login; default: WANDB_MODE, else "
        "offline",
    )


class TrackingSection(FormatModel):
    tensorboard: bool = Field(False, description="write TensorBoard event files")
    mlflow: bool = Field(False, description="log to MLflow")
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default: a local store under output_dir/mlruns"
    )
    mlflow_experiment: str = Field("stagewise", description="the MLflow experiment name")


class TrainConfig(FormatModel):
    model: ModelSection = Field(description="what to train")
    datasets: DatasetsSection = Field(description="the datasets and how they are mixed")
    data: DataSection = Field(
        default_factory=DataSection, description="data files (when no release is attached)"
    )
    release: ReleaseSection | None = Field(
        None, description="a data release repo whose stages decide the training data"
    )
    training: TrainingSection = Field(
        default_factory=TrainingSection, description="the loop's settings"
    )
    wandb: WandbSection = Field(default_factory=WandbSection, description="Weights & Biases")
    tracking: TrackingSection = Field(
        default_factory=TrackingSection, description="TensorBoard and MLflow"
    )

    @model_validator(mode="after")
    def _data_somewhere(self) -> TrainConfig:
        data = self.data
        if self.release is None and not (data.train_jsonl_list or data.train_stores):
            raise ValueError(
                "no training data: list data.train_jsonl_list (or data.train_stores), or "
                "attach a data release repo under release.path"
            )
        return self


def load_training_config(
    path: str | Path, overrides: Sequence[str] = ()
) -> tuple[TrainConfig, list[Problem]]:
    """Read a training config, apply Hydra-style overrides (``training.lr=3e-4``), check
    it; returns the config and warnings (unknown keys, kept but unused)."""
    from stagewise.config.base import load_config_file

    return load_config_file(TrainConfig, path, overrides, what="training config")
