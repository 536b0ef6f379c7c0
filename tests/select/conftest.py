"""Tiny models and chat data for the selection tests: built here, nothing downloaded."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from stagewise.select.docstrings import clean_and_corrupted
from stagewise.select.gate import convert
from stagewise.select.tiny import build_tiny_base


def tiny_config(model_type: str = "qwen2", **sizes: Any) -> Any:
    settings = {
        "vocab_size": 64,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 64,
    }
    if model_type == "qwen3":
        settings["head_dim"] = 8
    return AutoConfig.for_model(model_type, **(settings | sizes))


def tiny_lm(model_type: str = "qwen2", seed: int = 0, **sizes: Any) -> torch.nn.Module:
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(model_type, **sizes)).eval()


@pytest.fixture(scope="session")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2 with a docstring-trained tokenizer and a few pretraining steps."""
    folder = tmp_path_factory.mktemp("models") / "base"
    return build_tiny_base(folder, hidden_size=32, layers=2, steps=20, echo=lambda _: None)


@pytest.fixture(scope="session")
def selector_model(base_model: Path) -> Path:
    return convert(base_model, base_model.parent / "quality_gate_base")


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        out.writelines(json.dumps(r) + "\n" for r in records)
    return path


@pytest.fixture
def chats(tmp_path: Path) -> Callable[..., Path]:
    """``chats(n, dataset=..., name=...)``: n clean and n damaged docstring records."""

    def make(count: int = 8, dataset: str = "docs", name: str | None = None, seed: int = 0) -> Path:
        clean, bad = clean_and_corrupted(count, seed, dataset)
        return write_jsonl(tmp_path / "data" / f"{name or dataset}.jsonl", clean + bad)

    return make
