"""The quality gate: one ``Linear(hidden, 1, bias=False)`` in every decoder layer.

In layer l, with u the post-attention normed hidden state (the MLP's input), the gate
reads ``s = w_l . u`` per token and ``g = sigmoid(s)``. Two modes:

- ``scale_ffn`` (default): the MLP output is multiplied by g, ``h'' = h' + g * MLP(u)``,
  so the language-model loss keeps the gates of useful tokens open while the quality loss
  pushes gates down;
- ``probe``: the gate only reads; the model's logits are exactly the base model's.

The gate is installed on Qwen2, Qwen3 and Llama decoder layers (``layer.quality_gate``,
parameters ``model.layers.{l}.quality_gate.gate.weight``) and applied by a forward hook on
``layer.mlp``, so the base model's own modules and weights stay as they are. A converted
folder is the base model as saved by transformers, plus ``quality_gate.json`` (mode, init)
and ``quality_gate.safetensors`` (the gate weights).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from stagewise.errors import ConfigError

SUPPORTED = ("qwen2", "qwen3", "llama")
GATE_CONFIG = "quality_gate.json"
GATE_WEIGHTS = "quality_gate.safetensors"
MODES = ("scale_ffn", "probe")


class QualityGate(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(hidden, 1, bias=False)

    def forward(self, normed: torch.Tensor) -> torch.Tensor:
        # The gate keeps float32 weights whatever the model's dtype: a vector per layer.
        return self.gate(normed.to(self.gate.weight.dtype))  # raw scores s, [batch, tokens, 1]


@dataclass
class GateOutput:
    logits: torch.Tensor  # [batch, tokens, vocab]
    gates: torch.Tensor  # sigmoid(s), [batch, layers, tokens]


class QualityGateForCausalLM(nn.Module):
    """A Hugging Face causal LM (``.lm``) whose decoder layers carry quality gates."""

    def __init__(self, lm: nn.Module, mode: str = "scale_ffn") -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"unknown gate mode {mode!r}", hint=f"use one of {', '.join(MODES)}")
        self.lm = lm
        self.mode = mode
        self._scores: dict[int, torch.Tensor] = {}
        hidden = lm.config.hidden_size
        for index, layer in enumerate(decoder_layers(lm)):
            if not hasattr(layer, "quality_gate"):
                layer.quality_gate = QualityGate(hidden).to(layer.mlp.down_proj.weight.device)
            layer.mlp.register_forward_hook(self._hook(index, layer))

    def _hook(self, index: int, layer: nn.Module) -> Any:
        def apply_gate(_mlp: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor):  # type: ignore[no-untyped-def]
            scores = layer.quality_gate(args[0])
            # A recomputation under gradient checkpointing overwrites its own entry.
            self._scores[index] = scores
            if self.mode == "scale_ffn":
                return output * torch.sigmoid(scores).to(output.dtype)
            return None

        return apply_gate

    @property
    def num_layers(self) -> int:
        return len(decoder_layers(self.lm))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> GateOutput:
        self._scores.clear()
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        scores = torch.cat([self._scores[i] for i in range(self.num_layers)], dim=-1)
        return GateOutput(out.logits, torch.sigmoid(scores.float()).transpose(1, 2))

    def gate_weights(self) -> dict[str, torch.Tensor]:
        """The gate weights by their names in the LM's state dict."""
        return {k: v for k, v in self.lm.state_dict().items() if is_gate_parameter(k)}


def is_gate_parameter(name: str) -> bool:
    return ".quality_gate." in f".{name}"


def decoder_layers(lm: nn.Module) -> nn.ModuleList:
    base = getattr(lm, "get_base_model", lambda: lm)()
    layers = getattr(getattr(base, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(
            f"{type(base).__name__} has no model.layers: not a Qwen2/Qwen3/Llama causal LM",
            hint=f"convert a model of a supported architecture ({', '.join(SUPPORTED)})",
        )
    return layers


def quiet_transformers() -> None:
    """No per-file progress bars from transformers: our own lines say what is happening."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


@contextlib.contextmanager
def peft_quiet() -> Iterator[None]:
    """peft's own calls into transformers raise a deprecation warning
    (``is_gradient_checkpointing``) that is no concern of our users."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing", category=FutureWarning
        )
        yield


def with_lora(model: nn.Module, config: Any) -> nn.Module:
    """``peft.get_peft_model``, quietly."""
    from peft import get_peft_model

    with peft_quiet():
        return get_peft_model(model, config)


def merge_lora(model: nn.Module, adapter: Path) -> nn.Module:
    """The model with the gate adapter in ``adapter`` (a LoRA warmup's) merged in."""
    from peft import PeftModel

    settings_file = adapter / "adapter_config.json"
    try:
        targets = json.loads(settings_file.read_text(encoding="utf-8")).get("target_modules")
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise ConfigError(
            f"cannot read the adapter's settings: {exc}", location=str(settings_file)
        ) from None
    if sorted(targets or []) != ["quality_gate.gate"]:
        raise ConfigError(
            f"not a warmup's gate adapter: it targets {targets}",
            location=str(settings_file),
            hint="point model_checkpoint_path at the warmup's output (peft_mode: lora puts "
            "adapters on quality_gate.gate only); a finetune's adapters do not belong here",
        )
    try:
        with peft_quiet():
            return PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"the adapter does not fit the model: {exc}".splitlines()[0][:300],
            location=str(adapter),
            hint="use the adapter of a warmup of this very selector model",
        ) from None


def folder_digest(folder: str | Path) -> str:
    """What identifies a converted model's content, cheaply: the gate weights and the
    config byte for byte, every other file by name and size."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.name.encode())
        if path.name in (GATE_WEIGHTS, GATE_CONFIG, "config.json"):
            digest.update(path.read_bytes())
        else:
            digest.update(str(path.stat().st_size).encode())
    return digest.hexdigest()[:16]


def load_pretrained(folder: Path, what: str) -> tuple[nn.Module, Any]:
    """A causal LM folder and its tokenizer, local files only; a folder whose weights do
    not fit its config is a ConfigError naming it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        lm = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"cannot load the {what}: {exc}".splitlines()[0][:300],
            location=str(folder),
            hint="the folder must be written by save_pretrained: config.json, weights that "
            "fit it, and the tokenizer's files",
        ) from None
    return lm, tokenizer


def model_type(folder: Path) -> str:
    """The ``model_type`` of a Hugging Face folder, refused unless it is supported."""
    config_file = folder / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            "not a Hugging Face model folder (no config.json)",
            location=str(folder),
            hint="point at a folder written by save_pretrained (config.json and weights)",
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"config.json is not JSON: {exc.msg}", location=str(config_file)
        ) from None
    found = config.get("model_type") if isinstance(config, dict) else None
    if found not in SUPPORTED:
        raise ConfigError(
            f"unsupported architecture {found!r} for the quality gate",
            location=f"{config_file} (model_type)",
            hint=f"the gate is placed in {', '.join(SUPPORTED)} decoder layers; convert a "
            "Qwen2, Qwen3 or Llama-family model",
        )
    return str(found)


def convert(
    base: Path, out: Path, *, mode: str = "scale_ffn", init_std: float = 0.02, seed: int = 42
) -> Path:
    """Write a Quality-Gate model folder from a base causal LM folder."""
    quiet_transformers()
    kind = model_type(base)
    if mode not in MODES:
        raise ConfigError(f"unknown gate mode {mode!r}", hint=f"use one of {', '.join(MODES)}")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(
            "the output folder exists and is not empty",
            location=str(out),
            hint="choose a new folder, or delete this one",
        )
    lm, tokenizer = load_pretrained(base, "base model")
    temp = out.with_name(f".{out.name}.converting")
    shutil.rmtree(temp, ignore_errors=True)  # left by a convert that was killed
    lm.save_pretrained(temp)
    tokenizer.save_pretrained(temp)
    generator = torch.Generator().manual_seed(seed)
    hidden = lm.config.hidden_size
    gates = {
        f"model.layers.{i}.quality_gate.gate.weight": torch.randn(1, hidden, generator=generator)
        * init_std
        for i in range(len(decoder_layers(lm)))
    }
    save_file(gates, temp / GATE_WEIGHTS)
    settings = {"mode": mode, "init_mean": 0.0, "init_std": init_std, "seed": seed}
    settings |= {"base_model": str(base), "base_model_type": kind, "num_layers": len(gates)}
    (temp / GATE_CONFIG).write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
    if out.exists():
        out.rmdir()
    temp.rename(out)
    return out


def load_selector(
    folder: str | Path, *, mode: str | None = None
) -> tuple[QualityGateForCausalLM, Any]:
    """A converted folder as a :class:`QualityGateForCausalLM` and its tokenizer."""

    quiet_transformers()
    folder = Path(folder)
    settings_file = folder / GATE_CONFIG
    if not settings_file.is_file():
        model_type(folder)  # a clearer error first when it is no model folder at all
        raise ConfigError(
            f"not a converted Quality-Gate model (no {GATE_CONFIG})",
            location=str(folder),
            hint=f"run 'stagewise select convert {folder} OUT' and point selector_model.path at OUT",
        )
    model_type(folder)
    settings = json.loads(settings_file.read_text(encoding="utf-8"))
    lm, tokenizer = load_pretrained(folder, "selector model")
    model = QualityGateForCausalLM(lm, mode or settings.get("mode", "scale_ffn"))
    load_gate_weights(model, load_file(folder / GATE_WEIGHTS), str(folder / GATE_WEIGHTS))
    return model, tokenizer


def load_gate_weights(
    model: QualityGateForCausalLM, weights: Mapping[str, torch.Tensor], source: str
) -> None:
    """Put gate weights into ``model``; names and shapes must match exactly."""
    own = model.gate_weights()
    if not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ConfigError(
            "the checkpoint's model_state_dict holds values that are not tensors",
            location=source,
            hint="point at a full_rank_weights.pt written by 'stagewise select warmup'",
        )
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    wrong = [k for k in own if k in weights and weights[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        shapes = {tuple(v.shape) for v in weights.values()}
        raise ConfigError(
            "the checkpoint's gate weights do not match the model: "
            f"it has {len(weights)} gate(s) of shape {sorted(shapes)}, the model "
            f"{len(own)} of shape {[1, model.lm.config.hidden_size]}",
            location=source,
            hint="use the checkpoint of a warmup of this very selector model "
            "(selector_model.path must be the model the warmup trained)",
        )
    params = dict(model.lm.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].dtype))
