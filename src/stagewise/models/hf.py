"""``hf:<AutoModel class>``: a Hugging Face classifier, random or from a local folder.

``model.name: hf:AutoModelForSequenceClassification`` (text: records give ``input_ids``,
a list of token ids, and optionally ``attention_mask``) or
``hf:AutoModelForImageClassification`` (images: records give ``pixel_values``, channels
first). The model returns ``outputs.logits``, one row of ``num_labels`` per sample.

- **Random weights** (no ``pretrained``): ``options`` is the model's config, ``model_type``
  (``bert``, ``qwen2``, ``llama``, ``vit``, ...) plus its sizes, built with
  ``AutoConfig.for_model(model_type, num_labels=..., **sizes)`` and ``from_config``. A key
  the config class does not define is refused (transformers would keep it silently).
- **Pretrained**: ``pretrained`` is a local folder written by ``save_pretrained``; it is
  loaded with ``local_files_only`` (nothing is downloaded) and a new head of
  ``num_labels`` where the saved one differs. ``options`` then override config values.

Text models that define no pad token get 0 (sequence classification finds each row's
last real token by it, which decoder models such as qwen2 and llama need). Without an
``attention_mask`` column, tokens equal to the pad id are masked.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn
from transformers import AutoConfig, PretrainedConfig

from stagewise.errors import ConfigError, DataError
from stagewise.models.batch import Batch, DatasetSpec, scatter

# class name -> (input column, per-sample dimensions it accepts)
CLASSES: dict[str, tuple[str, tuple[int, ...]]] = {
    "AutoModelForSequenceClassification": ("input_ids", (1,)),
    "AutoModelForImageClassification": ("pixel_values", (2, 3)),
}
MASK = "attention_mask"
_SIZE = re.compile(r"size|layers|heads|dim|vocab|dropout|positions")


class HFClassifier(nn.Module):
    """A transformers model behind the stagewise model interface (``.model`` is the HF
    model itself: ``save_pretrained`` works on it)."""

    task = "classification"

    def __init__(self, model: nn.Module, column: str) -> None:
        super().__init__()
        self.model = model
        self.column = column

    def forward(self, batch: Batch) -> torch.Tensor:
        return scatter(batch, [self._logits(g.inputs) for g in batch.groups])

    def _logits(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        config = self.model.config
        values = inputs[self.column]
        if self.column == "pixel_values":
            pixels = values.float()
            pixels = pixels.unsqueeze(1) if pixels.dim() == 3 else pixels
            return self.model(pixel_values=pixels).logits
        ids = values.long()
        vocab = getattr(config, "vocab_size", None)
        if ids.numel() and vocab and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise DataError(
                f"token ids run {int(ids.min())}..{int(ids.max())}, outside the model's "
                f"vocabulary of {vocab}",
                hint="tokenize with the model's own tokenizer, or raise vocab_size in "
                "model.options",
            )
        mask = inputs.get(MASK)
        if mask is None:
            mask = ids != getattr(config, "pad_token_id", 0)
            mask[:, 0] = True  # a row of padding only still attends to something
        return self.model(input_ids=ids, attention_mask=mask.long()).logits


def _check_config_keys(default: PretrainedConfig, keys: Sequence[str]) -> None:
    config_class = type(default)
    known = set(default.to_dict()) | set(getattr(config_class, "attribute_map", {}))
    unknown = sorted(set(keys) - known)
    if unknown:
        near = {k: difflib.get_close_matches(k, known, n=1) for k in unknown}
        guesses = ", ".join(f"{k} -> {m[0]}" for k, m in near.items() if m)
        raise ConfigError(
            f"{config_class.__name__} has no setting(s) {', '.join(unknown)}",
            location="model.options",
            hint=(f"did you mean {guesses}? " if guesses else "")
            + f"the options are {config_class.__name__}'s fields; its sizes are "
            + ", ".join(sorted(k for k in known if _SIZE.search(k))),
        )


def _random_config(options: Mapping[str, Any], num_labels: int) -> PretrainedConfig:
    rest = dict(options)
    model_type = rest.pop("model_type", None)
    if not isinstance(model_type, str) or not model_type:
        raise ConfigError(
            "a Hugging Face model with random weights needs model.options.model_type",
            location="model.options",
            hint="set model_type (e.g. bert, qwen2, llama, vit) and its sizes (hidden_size, "
            "num_hidden_layers, ...), or give a local folder as model.pretrained_name",
        )
    try:
        default = AutoConfig.for_model(model_type)
    except ValueError:
        close = difflib.get_close_matches(model_type, ["bert", "qwen2", "llama", "gpt2", "vit"])
        raise ConfigError(
            f"transformers {transformers.__version__} has no model_type {model_type!r}",
            location="model.options.model_type",
            hint=f"did you mean {close[0]}?" if close else "use e.g. bert, qwen2, llama, vit",
        ) from None
    _check_config_keys(default, list(rest))
    return AutoConfig.for_model(model_type, num_labels=num_labels, **rest)


def _load(
    auto: Any, class_name: str, pretrained: str, num_labels: int, options: Mapping[str, Any]
) -> Any:
    folder = Path(pretrained).expanduser()
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"no saved model at {pretrained!r} (a folder with config.json)",
            location="model.pretrained_name",
            hint="give a local folder written by save_pretrained; nothing is downloaded "
            "(fetch a hub model once with `hf download <name> --local-dir <folder>`)",
        )
    overrides = dict(options)
    model_type = overrides.pop("model_type", None)
    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        if model_type not in (None, config.model_type):
            raise ConfigError(
                f"the model in {pretrained!r} is a {config.model_type}, not a {model_type}",
                location="model.options.model_type",
                hint="drop model_type from model.options, or fix model.pretrained_name",
            )
        _check_config_keys(config, list(overrides))
        for key, value in overrides.items():
            setattr(config, key, value)
        config.num_labels = num_labels
        _pad_tokens(config, class_name)
        return auto.from_pretrained(  # safetensors only: a pickled .bin is never loaded
            str(folder),
            config=config,
            local_files_only=True,
            ignore_mismatched_sizes=True,
            use_safetensors=True,
        )
    except (OSError, ValueError) as exc:
        what = f"the model in {pretrained!r}"
        raise _build_error(class_name, what, exc, "model.pretrained_name") from None


def _pad_tokens(config: PretrainedConfig, class_name: str) -> None:
    """Text classifiers pad with 0 where the config names no pad token."""
    if CLASSES[class_name][0] == "input_ids" and getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = 0


def _build_error(class_name: str, what: str, exc: Exception, location: str) -> ConfigError:
    if "Unrecognized configuration class" in str(exc):  # its list of every model is long
        examples = "vit, resnet" if "Image" in class_name else "bert, qwen2, llama"
        return ConfigError(
            f"{class_name} cannot take {what}: no such model",
            location=location,
            hint=f"use a model_type made for this class, e.g. {examples}",
        )
    return ConfigError(
        f"{class_name} cannot be built from {what}: {exc}",
        location=location,
        hint="check that the sizes agree (e.g. hidden_size a multiple of num_attention_heads), "
        "and that a saved folder holds config.json and the weights save_pretrained wrote",
    )


def _check_inputs(datasets: Sequence[DatasetSpec], class_name: str) -> str:
    column, dimensions = CLASSES[class_name]
    for d in datasets:
        shape = d.inputs.get(column)
        if shape is None or len(shape) not in dimensions:
            want = "a list of token ids" if column == "input_ids" else "an image (C, H, W)"
            raise ConfigError(
                f"{class_name} needs '{column}' ({want}) in every record; dataset "
                f"{d.name!r} has {dict(d.inputs) or 'no inputs'}",
                location="model.name",
                hint=f"give each record '{column}'",
            )
    return column


def build(
    *,
    datasets: Sequence[DatasetSpec],
    num_labels: int,
    options: Mapping[str, Any],
    pretrained: str | None = None,
    class_name: str,
) -> HFClassifier:
    if class_name not in CLASSES:
        raise ConfigError(
            f"hf:{class_name} is not a supported model class",
            location="model.name",
            hint="stagewise trains one label per sample: use "
            + " or ".join(f"hf:{name}" for name in CLASSES),
        )
    if "num_labels" in options:
        raise ConfigError(
            "num_labels is set by the run, not by model.options",
            location="model.options.num_labels",
            hint="set model.num_labels and drop it from model.options",
        )
    column = _check_inputs(datasets, class_name)
    auto = getattr(transformers, class_name)
    if pretrained:
        return HFClassifier(_load(auto, class_name, pretrained, num_labels, options), column)
    config = _random_config(options, num_labels)
    _pad_tokens(config, class_name)
    try:
        model = auto.from_config(config)
    except ValueError as exc:
        what = f"a {config.model_type} config"
        raise _build_error(class_name, what, exc, "model.options") from None
    return HFClassifier(model, column)
