"""Stage 1, warmup: train the quality gates of a converted model on a subset of the data.

``peft_mode: full_rank`` freezes the model and trains only the gate weights (one vector
per layer), saved alone as ``full_rank_weights.pt`` = {"model_state_dict": the gate
weights, "tokenizer_name": ...}. ``peft_mode: lora`` puts LoRA adapters (r 16, alpha 64)
on the gates through PEFT; the adapters go to ``checkpoint-final/``. The loss is
:mod:`stagewise.select.losses`' CE + quality_loss_weight * L_q.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stagewise.config.selection import WarmupConfig
from stagewise.select import loop
from stagewise.select.encoding import Encoded, collate, encode, label_tokens, pad_id
from stagewise.select.gate import (
    QualityGateForCausalLM,
    folder_digest,
    is_gate_parameter,
    load_selector,
    with_lora,
)
from stagewise.select.losses import gate_statistics, quality_loss, shifted_cross_entropy
from stagewise.select.outputs import output_folder, record_config
from stagewise.select.records import read_records, require_records, subset

WEIGHTS_FILE = "full_rank_weights.pt"


@dataclass(frozen=True)
class Example:
    encoded: Encoded
    is_target: bool


@dataclass(frozen=True)
class WarmupResult:
    output_dir: Path
    weights: Path  # full_rank_weights.pt, or the LoRA checkpoint folder
    last: dict[str, Any]


def warmup(
    config: WarmupConfig, overrides: Sequence[str] = (), echo: loop.Echo = print
) -> WarmupResult:
    procs = loop.processes(config.training.device)
    echo = loop.for_rank(echo, procs)
    settings, data = config.training, config.dataset
    loop.schedule(settings, 1, procs.world)  # a batch size that cannot split: before loading

    model, tokenizer = load_selector(
        config.selector_model.path, mode=config.selector_model.gate_mode
    )
    records = read_records(data.data_path)
    records += read_records(data.target_path, target=True, what="dataset.target_path")
    records = subset(records, data.subset_ratio, config.seed)
    require_records(records, "warm up on")
    examples = [
        Example(
            encode(r, tokenizer, data.max_seq_len, full_sequence=settings.full_sequence_prediction),
            r.is_target_task,
        )
        for r in records
    ]
    out = output_folder(config, "warmup", overrides)
    targets = sum(e.is_target for e in examples)
    echo(
        f"warmup: {len(examples)} records ({targets} of the target task), gates in {model.mode} mode"
    )

    torch.manual_seed(config.seed)  # LoRA's initial adapters
    _make_trainable(model, settings.peft_mode, settings.lora_r, settings.lora_alpha)
    if settings.gradient_checkpointing:
        model.lm.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    pad = pad_id(tokenizer)
    calls = {"n": 0}

    def batch_of(items: list[Example]) -> dict[str, torch.Tensor]:
        batch = collate([e.encoded for e in items], pad)
        batch["is_target"] = torch.tensor([e.is_target for e in items], dtype=torch.float32)
        return batch

    def step_loss(trained: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        output = trained(batch["input_ids"], batch["attention_mask"])
        ce = shifted_cross_entropy(output.logits, batch["labels"])
        lq = quality_loss(
            output.gates,
            batch["attention_mask"],
            batch["is_target"],
            balance=settings.quality_loss_balance,
            sample_wise=settings.sample_wise_averaging,
        )
        calls["n"] += 1
        if settings.quality_loss_debug and calls["n"] % settings.log_every == 0:
            for row in gate_statistics(output.gates.detach(), batch["attention_mask"]):
                echo(
                    "  gates layer {layer}: mean {mean:.4f} std {std:.4f} min {min:.4f} "
                    "max {max:.4f}".format(**row)
                )
        return {"ce": ce, "quality_loss": lq}

    def units(example: Example) -> dict[str, int]:
        # CE is a mean over the tokens that carry a label; L_q over samples or tokens.
        gated = 1 if settings.sample_wise_averaging else len(example.encoded.ids)
        return {"ce": label_tokens(example.encoded), "quality_loss": gated}

    def save_files(folder: Path) -> None:
        if settings.peft_mode == "full_rank":
            weights = {k: v.detach().cpu().contiguous() for k, v in model.gate_weights().items()}
            torch.save(
                {"model_state_dict": weights, "tokenizer_name": tokenizer.name_or_path},
                folder / WEIGHTS_FILE,
            )
        else:
            model.lm.save_pretrained(folder)

    run_id = loop.fingerprint(
        "warmup",
        [(e.encoded.ids, e.encoded.labels, e.is_target) for e in examples],
        loop.trajectory(settings),
        [data.sort_by_length, data.shuffle],
        config.seed,
        folder_digest(config.selector_model.path),
        model.mode,
    )
    last = loop.train(
        model,
        examples,
        batch_of,
        step_loss,
        settings,
        units=units,
        scales={"ce": 1.0, "quality_loss": settings.quality_loss_weight},
        out=out,
        seed=config.seed,
        run_fingerprint=run_id,
        save_files=save_files,
        procs=procs,
        fixed_order=_length_order(examples) if data.sort_by_length else None,
        shuffle=data.shuffle,
        started=lambda: record_config(out, config),
        echo=echo,
    )
    if settings.peft_mode == "full_rank":
        result = loop.publish(out, procs, WEIGHTS_FILE, only=WEIGHTS_FILE)
    else:
        result = loop.publish(out, procs, loop.FINAL)
    loop.finish(procs)
    echo(f"✅ warmup done: {result}")
    return WarmupResult(out, result, last)


def _make_trainable(model: QualityGateForCausalLM, mode: str, r: int, alpha: int) -> None:
    if mode == "full_rank":
        for name, parameter in model.lm.named_parameters():
            parameter.requires_grad_(is_gate_parameter(name))
        return
    from peft import LoraConfig, TaskType

    lora = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=r,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=["quality_gate.gate"],
    )
    model.lm = with_lora(model.lm, lora)


def _length_order(examples: Sequence[Example]) -> list[int]:
    return sorted(range(len(examples)), key=lambda i: (-len(examples[i].encoded.ids), i))
