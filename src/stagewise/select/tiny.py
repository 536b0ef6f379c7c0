"""A tiny causal LM to run the selection recipe on a CPU, built here with no download.

``build_tiny_base(OUT)`` trains a byte-level BPE tokenizer (``tokenizers``) on the Python
docstring corpus (:mod:`stagewise.select.docstrings`), builds a small Qwen2- or
Qwen3- or Llama-architecture model from a config with random weights, pretrains it briefly on the
same text so that it knows a little English, and saves both with ``save_pretrained``:
a folder that ``stagewise select convert`` and ``finetune`` read exactly as they read a
real Qwen3-1.7B folder.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch

from stagewise.errors import ConfigError
from stagewise.select.docstrings import corpus
from stagewise.select.gate import quiet_transformers

EOS = "<|endoftext|>"
ARCHITECTURES = ("qwen2", "qwen3", "llama")


def train_tokenizer(texts: list[str], vocab_size: int = 512):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=EOS)


def build_tiny_base(
    out: Path,
    *,
    architecture: str = "qwen2",
    hidden_size: int = 64,
    layers: int = 4,
    vocab_size: int = 512,
    steps: int = 300,
    seq_len: int = 96,
    batch_size: int = 16,
    learning_rate: float = 3e-3,
    seed: int = 0,
    echo: Callable[[str], None] = print,
) -> Path:
    """Write a pretrained tiny model folder at ``out``; returns ``out``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if architecture not in ARCHITECTURES:
        raise ConfigError(
            f"unknown architecture {architecture!r}", hint=f"use one of {', '.join(ARCHITECTURES)}"
        )
    quiet_transformers()
    torch.manual_seed(seed)
    texts = corpus()
    tokenizer = train_tokenizer(texts, vocab_size)
    config = AutoConfig.for_model(
        architecture,
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden_size // 4,  # qwen3 would default to 128
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    model = AutoModelForCausalLM.from_config(config)
    stream: list[int] = []
    for text in texts:
        stream += [*tokenizer.encode(text), tokenizer.eos_token_id]
    tokens = torch.tensor(stream)
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    began = time.monotonic()
    loss = None
    model.train()
    for step in range(steps):
        starts = [rng.randrange(len(tokens) - seq_len - 1) for _ in range(batch_size)]
        batch = torch.stack([tokens[s : s + seq_len] for s in starts])
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * min(1.0, (step + 1) / 20) * (1 - step / steps)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % 50 == 0 or step + 1 == steps:
            echo(
                f"  pretraining step {step + 1}/{steps}: loss {float(loss.detach()):.3f} "
                f"({time.monotonic() - began:.0f} s)"
            )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {"corpus_tokens": len(stream), "steps": steps, "seed": seed}
    info["last_loss"] = None if loss is None else float(loss.detach())
    (out / "pretraining.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return out
