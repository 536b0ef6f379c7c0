"""The training loop that the warmup and the finetune share, read top to bottom.

Step s of a run sees the same samples whether or not the run was interrupted: epoch
``s // steps_per_epoch`` is a seeded permutation of the records (or the length order),
and its batches are consecutive slices of it. Every ``save_steps`` (default: each epoch)
and at the end, ``checkpoint-<step>/`` is written atomically: the stage's own files
(adapters, gate weights) plus ``trainer_state.pt`` (the trainable weights, AdamW's state,
the RNG states, the step). A run started on a folder that holds checkpoints continues from
the newest one and ends with exactly the weights of an uninterrupted run.

Under torchrun each process takes every world-th sample of a batch; the gradients are
averaged by DDP (gloo on CPU, NCCL on GPUs; FSDP with ``training.fsdp``, untested here).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stagewise.config.selection import LoopSettings
from stagewise.errors import ConfigError

STATE_FILE = "trainer_state.pt"
Echo = Callable[[str], None]
StepLoss = Callable[[nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class Processes:
    rank: int
    world: int
    device: torch.device


@dataclass(frozen=True)
class Schedule:
    per_device: int
    accumulation: int
    steps_per_epoch: int
    total_steps: int


def processes(device: str) -> Processes:
    """This process's rank and device; starts torch.distributed under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    chosen = torch.device(device)
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
    return Processes(rank, world, chosen)


def schedule(settings: LoopSettings, records: int, world: int) -> Schedule:
    per_device = settings.per_device_batch_size or max(1, settings.batch_size // world)
    if settings.batch_size % (per_device * world):
        raise ConfigError(
            f"training.batch_size {settings.batch_size} is not a multiple of "
            f"per_device_batch_size {per_device} x {world} process(es)",
            location="training.batch_size",
            hint="make batch_size = per_device_batch_size x processes x accumulation steps",
        )
    steps_per_epoch = max(1, math.ceil(records / settings.batch_size))
    total = settings.max_steps or max(1, math.ceil(settings.epochs * steps_per_epoch))
    return Schedule(per_device, settings.batch_size // (per_device * world), steps_per_epoch, total)


def epoch_order(
    count: int, seed: int, epoch: int, shuffle: bool, fixed: Sequence[int] | None = None
) -> list[int]:
    """The records of one epoch, in order: ``fixed`` (length-sorted) or a seeded shuffle."""
    if fixed is not None:
        return list(fixed)
    if not shuffle:
        return list(range(count))
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(count, generator=generator).tolist()


def learning_rate(settings: LoopSettings, step: int, total: int) -> float:
    warm = int(settings.warmup_ratio * total)
    if step < warm:
        return settings.learning_rate * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    if settings.scheduler == "linear":
        return settings.learning_rate * max(0.0, 1 - progress)
    if settings.scheduler == "cosine":
        return settings.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))
    return settings.learning_rate


def fingerprint(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train(
    model: nn.Module,
    examples: Sequence[Any],
    collate: Callable[[list[Any]], dict[str, torch.Tensor]],
    step_loss: StepLoss,
    settings: LoopSettings,
    *,
    out: Path,
    seed: int,
    run_fingerprint: str,
    save_files: Callable[[Path], None],
    procs: Processes,
    fixed_order: Sequence[int] | None = None,
    shuffle: bool = True,
    echo: Echo = print,
) -> dict[str, Any]:
    """Train ``model``'s trainable parameters; returns the last step's numbers."""
    if procs.rank != 0:
        echo = _silent  # rank 0 speaks for the run
    plan = schedule(settings, len(examples), procs.world)
    trained = _wrap(model, settings, procs)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    start = _resume(out, model, optimizer, run_fingerprint, echo)
    if start == 0:
        torch.manual_seed(seed)
        random.seed(seed)
    echo(
        f"training {sum(p.numel() for p in params):,} parameters: {plan.total_steps} steps of "
        f"{settings.batch_size} ({plan.accumulation} x {plan.per_device} per process, "
        f"{procs.world} process(es)), {plan.steps_per_epoch} steps per epoch"
        + (f"; resumed at step {start}" if start else "")
    )
    save_every = settings.save_steps or plan.steps_per_epoch
    metrics_log = out / "metrics.jsonl"
    last: dict[str, Any] = {}
    began = time.monotonic()
    trained.train()
    for step in range(start, plan.total_steps):
        epoch, position = divmod(step, plan.steps_per_epoch)
        order = epoch_order(len(examples), seed, epoch, shuffle, fixed_order)
        batch = order[position * settings.batch_size : (position + 1) * settings.batch_size]
        mine = batch[procs.rank :: procs.world]
        lr = learning_rate(settings, step, plan.total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        totals: dict[str, float] = {}
        for micro in range(plan.accumulation):
            part = mine[micro * plan.per_device : (micro + 1) * plan.per_device]
            if not part:
                continue
            inputs = {
                k: v.to(procs.device) for k, v in collate([examples[i] for i in part]).items()
            }
            with autocast(settings.precision, procs.device):
                loss, numbers = step_loss(trained, inputs)
            (loss / plan.accumulation).backward()
            for key, value in numbers.items():
                totals[key] = totals.get(key, 0.0) + value / plan.accumulation
        if settings.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        last = {"step": done, "epoch": round(done / plan.steps_per_epoch, 4), "lr": lr, **totals}
        if procs.rank == 0 and (done % settings.log_every == 0 or done == plan.total_steps):
            rate = (done - start) / max(time.monotonic() - began, 1e-9)
            shown = " ".join(f"{k} {v:.4f}" for k, v in totals.items())
            echo(
                f"step {done}/{plan.total_steps} epoch {last['epoch']:.2f} {shown} lr {lr:.2e} ({rate:.2f} steps/s)"
            )
            with open(metrics_log, "a", encoding="utf-8") as log:
                log.write(json.dumps(last) + "\n")
        if done % save_every == 0 or done == plan.total_steps:
            _save(out, done, model, optimizer, run_fingerprint, save_files, procs, settings)
            _barrier(procs)
    return last


def publish(out: Path, procs: Processes, name: str, only: str | None = None) -> Path:
    """Copy the newest checkpoint's files (or its file ``only``) to ``out/name``, without
    the trainer state: the stage's result. Rank 0 copies; every rank gets the path."""
    target = out / name
    if procs.rank == 0:
        newest = checkpoints(out)[-1]
        if only:
            shutil.copyfile(newest / only, target)
        else:
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(newest, target, ignore=shutil.ignore_patterns(STATE_FILE))
    _barrier(procs)
    return target


def _silent(_text: str) -> None:
    return None


def _barrier(procs: Processes) -> None:
    if procs.world > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _wrap(model: nn.Module, settings: LoopSettings, procs: Processes) -> nn.Module:
    model.to(procs.device)
    if procs.world == 1:
        return model
    fsdp = getattr(settings, "fsdp", "")
    if "full_shard" in fsdp:  # written to torch's documented API; untested here (no GPU)
        import functools

        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

        layer_class = (
            type(model.get_decoder().layers[0]) if hasattr(model, "get_decoder") else nn.Module
        )
        policy = functools.partial(
            transformer_auto_wrap_policy, transformer_layer_cls={layer_class}
        )
        return FullyShardedDataParallel(model, auto_wrap_policy=policy, use_orig_params=True)
    ids = [procs.device.index] if procs.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def autocast(precision: str, device: torch.device) -> Any:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def checkpoints(out: Path) -> list[Path]:
    found = [
        p for p in out.glob("checkpoint-*") if (p / STATE_FILE).is_file() and p.name[11:].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[11:]))


def _save(
    out: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    run_fingerprint: str,
    save_files: Callable[[Path], None],
    procs: Processes,
    settings: LoopSettings,
) -> None:
    if procs.rank != 0:
        return
    final = out / f"checkpoint-{step}"
    temp = out / f".checkpoint-{step}.writing"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    save_files(temp)
    state = {
        "step": step,
        "fingerprint": run_fingerprint,
        "weights": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "python_rng": json.dumps(random.getstate()),
    }
    torch.save(state, temp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    temp.rename(final)
    for old in checkpoints(out)[: -settings.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)


def _resume(
    out: Path, model: nn.Module, optimizer: torch.optim.Optimizer, run_fingerprint: str, echo: Echo
) -> int:
    found = checkpoints(out)
    if not found:
        return 0
    state = torch.load(found[-1] / STATE_FILE, weights_only=True)
    if state.get("fingerprint") != run_fingerprint:
        raise ConfigError(
            "the output folder holds checkpoints of a different run (other data or settings)",
            location=str(found[-1]),
            hint="resume with the same config and data, or give a new output_dir",
        )
    own = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["weights"].items():
            own[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    python_state = json.loads(state["python_rng"])
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    echo(f"resuming from {found[-1]}")
    return int(state["step"])
