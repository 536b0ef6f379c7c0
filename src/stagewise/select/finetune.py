"""Stage 3, finetune: LoRA (PEFT) on a standard Hugging Face causal LM.

The target model is a plain ``AutoModelForCausalLM`` folder (no quality gates). With
``peft_mode: lora`` adapters (r 128, alpha 256 by default, the seed's values) go on the
attention and MLP projections and only they are trained and saved:
``checkpoint-<step>/adapter_config.json`` + ``adapter_model.safetensors`` while training,
``checkpoint-final/`` at the end. ``dataset.mode: subset`` trains on the selection
(``selected_data.jsonl``), ``full`` on all the data, for the comparison.

One process runs on the CPU or a GPU; under torchrun several processes train with DDP
(tested on CPUs with gloo; NCCL is written to torch's documented API and untested here:
no GPU). FSDP is not built yet: the seed's ``training.fsdp`` setting is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stagewise.config.selection import FinetuneConfig
from stagewise.errors import ConfigError, DataError
from stagewise.select import loop
from stagewise.select.encoding import Encoded, collate, encode, label_tokens, pad_id
from stagewise.select.gate import folder_digest, load_pretrained, quiet_transformers, with_lora
from stagewise.select.losses import shifted_cross_entropy
from stagewise.select.outputs import output_folder, record_config
from stagewise.select.records import read_records, require_records, subset


@dataclass(frozen=True)
class FinetuneResult:
    output_dir: Path
    final: Path
    records: int
    last: dict[str, Any]


def load_target(name: str) -> tuple[nn.Module, Any]:
    quiet_transformers()
    folder = Path(name)
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"no local model folder {name!r} (nothing is downloaded at run time)",
            location="training.model.name",
            hint="download the model once (e.g. huggingface-cli download NAME --local-dir DIR) "
            "and set training.model.name=DIR",
        )
    return load_pretrained(folder, "target model")


def finetune(
    config: FinetuneConfig, overrides: Sequence[str] = (), echo: loop.Echo = print
) -> FinetuneResult:
    procs = loop.processes(config.training.device)
    echo = loop.for_rank(echo, procs)
    settings, data = config.training, config.dataset
    loop.schedule(settings, 1, procs.world)  # a batch size that cannot split: before loading

    model, tokenizer = load_target(settings.model.name)
    records = subset(read_records(data.data_path), data.subset_ratio, config.seed)
    require_records(records, "finetune on")
    if data.mode == "subset" and not all("scores" in r.extra for r in records):
        echo("note: dataset.mode is subset but data_path is not a selected_data.jsonl (no scores)")
    examples = [
        encode(r, tokenizer, data.max_seq_len, full_sequence=settings.full_sequence_prediction)
        for r in records
    ]
    _check_loss_tokens(examples, records, data.max_seq_len, echo)
    out = output_folder(config, "finetune", overrides)
    torch.manual_seed(config.seed)  # the adapters' initial weights
    if settings.peft_mode == "lora":
        model = _with_lora(model, settings.lora.model_dump())
    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    echo(
        f"finetune: {len(records)} records ({data.mode}), {settings.peft_mode} on {settings.model.name}"
    )
    pad = pad_id(tokenizer)

    def step_loss(trained: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = trained(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).logits
        return {"ce": shifted_cross_entropy(logits, batch["labels"])}

    def save_files(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    run_id = loop.fingerprint(
        "finetune",
        folder_digest(settings.model.name),
        [(e.ids, e.labels) for e in examples],
        loop.trajectory(settings),
        data.shuffle,
        config.seed,
    )
    last = loop.train(
        model,
        examples,
        lambda items: collate(items, pad),
        step_loss,
        settings,
        units=lambda example: {"ce": label_tokens(example)},
        scales={"ce": 1.0},
        out=out,
        seed=config.seed,
        run_fingerprint=run_id,
        save_files=save_files,
        procs=procs,
        shuffle=data.shuffle,
        started=lambda: record_config(out, config),
        echo=echo,
    )
    final = loop.publish(out, procs, loop.FINAL)
    loop.finish(procs)
    echo(f"✅ finetune done: {final}")
    return FinetuneResult(out, final, len(records), last)


def _check_loss_tokens(
    examples: Sequence[Encoded], records: Sequence[Any], max_len: int, echo: loop.Echo
) -> None:
    """Truncation can leave a record with nothing to learn: refused when it is all of them."""
    empty = [r for e, r in zip(examples, records, strict=True) if label_tokens(e) == 0]
    if len(empty) == len(examples):
        raise DataError(
            f"no record keeps a token to learn within dataset.max_seq_len {max_len}",
            location=empty[0].source,
            hint="raise dataset.max_seq_len (the prompt fills it before the answer starts), "
            "or set training.full_sequence_prediction=true",
        )
    if empty:
        echo(f"note: {len(empty)} record(s) keep no answer token within max_seq_len {max_len}")


def _with_lora(model: nn.Module, lora: dict[str, Any]) -> nn.Module:
    from peft import LoraConfig, TaskType

    names = {name.rpartition(".")[2] for name, _ in model.named_modules()}
    missing = [m for m in lora["target_modules"] if m not in names]
    if missing:
        raise ConfigError(
            f"the model has no module(s) named {', '.join(missing)}",
            location="training.lora.target_modules",
            hint="list module names of this architecture (Qwen and Llama: q_proj, k_proj, "
            "v_proj, o_proj, gate_proj, up_proj, down_proj)",
        )
    config = LoraConfig(task_type=TaskType.CAUSAL_LM, **lora)
    return with_lora(model, config)
