"""The training loop that the warmup and the finetune share, read top to bottom.

Step s of a run sees the same samples whether or not the run was interrupted: epoch
``s // steps_per_epoch`` is a seeded permutation of the records (or the length order),
and its batches are consecutive slices of it. Every ``save_steps`` (default: each epoch)
and at the end, ``checkpoint-<step>/`` is written atomically: the stage's own files
(adapters, gate weights) plus ``trainer_state.pt`` (the trainable weights, AdamW's state,
the RNG states, the step). A run started on a folder that holds checkpoints continues from
the newest one and ends with exactly the weights of an uninterrupted run.

Under torchrun each process takes every world-th sample of a batch; the gradients are
averaged by DDP (gloo on CPU, tested; NCCL on GPUs, untested here).
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
from stagewise.store.atomic import atomic_write

STATE_FILE = "trainer_state.pt"
FINAL = "checkpoint-final"  # the stage's result: the newest checkpoint without its state
Echo = Callable[[str], None]
# A step's loss as named terms, each a mean over its units in one micro-batch (e.g. "ce":
# over the tokens that carry a label, "quality_loss": over the samples).
StepLoss = Callable[[nn.Module, dict[str, torch.Tensor]], dict[str, torch.Tensor]]
Units = Callable[[Any], dict[str, int]]


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
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device} was asked for, but this torch sees no CUDA GPU",
            location="device",
            hint="use device=auto or device=cpu here, or install a CUDA build of torch",
        )
    chosen = torch.device(f"cuda:{local}" if device == "cuda" else device)
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
    return Processes(rank, world, chosen)


def for_rank(echo: Echo, procs: Processes) -> Echo:
    """``echo`` on rank 0, silence elsewhere: rank 0 speaks for the run."""
    return echo if procs.rank == 0 else silent


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


# Settings that change what a run prints or keeps, not the weights it ends with.
_NOT_TRAJECTORY = {"log_every", "save_steps", "keep_checkpoints", "device", "quality_loss_debug"}


def trajectory(settings: LoopSettings) -> dict[str, Any]:
    """The settings that decide a run's weights: what a resumed run must share."""
    return {k: v for k, v in settings.model_dump(mode="json").items() if k not in _NOT_TRAJECTORY}


def train(
    model: nn.Module,
    examples: Sequence[Any],
    collate: Callable[[list[Any]], dict[str, torch.Tensor]],
    step_loss: StepLoss,
    settings: LoopSettings,
    *,
    units: Units,
    scales: dict[str, float],
    out: Path,
    seed: int,
    run_fingerprint: str,
    save_files: Callable[[Path], None],
    procs: Processes,
    fixed_order: Sequence[int] | None = None,
    shuffle: bool = True,
    started: Callable[[], None] | None = None,
    echo: Echo = print,
) -> dict[str, Any]:
    """Train ``model``'s trainable parameters; returns the last step's numbers.

    The loss is ``sum of scales[name] x term`` over ``step_loss``'s terms. Each term is a
    mean over its units (``units(example)``: label tokens, samples); a micro-batch's term
    counts with its share of the whole batch's units, so accumulation steps and processes
    give the gradient of the batch in one pass. Under torchrun every process runs the same
    number of forward and backward passes (one without samples runs a zero-weight pass),
    so that DDP's gradient averaging never waits on a process that has nothing to do."""
    echo = for_rank(echo, procs)
    plan = schedule(settings, len(examples), procs.world)
    trained = _wrap(model, settings, procs)
    params = [p for p in trained.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    start = _resume(out, model, optimizer, run_fingerprint, echo, procs)
    if start == 0:
        torch.manual_seed(seed)
        random.seed(seed)
    if started is not None:
        started()
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
        passes = math.ceil(len(batch[0 :: procs.world]) / plan.per_device)  # rank 0 has most
        lr = learning_rate(settings, step, plan.total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        whole = _count(units, [examples[i] for i in batch])
        own = _count(units, [examples[i] for i in mine])
        totals: dict[str, float] = {}
        for micro in range(passes):
            part = mine[micro * plan.per_device : (micro + 1) * plan.per_device]
            items = [examples[i] for i in (part or batch[:1])]
            share = _count(units, [examples[i] for i in part])
            inputs = {k: v.to(procs.device) for k, v in collate(items).items()}
            with autocast(settings.precision, procs.device):
                terms = step_loss(trained, inputs)
            counted = [name for name in terms if whole.get(name)]  # the same on every process
            if counted:
                loss = sum(
                    scales[name] * terms[name] * share.get(name, 0) / whole[name] * procs.world
                    for name in counted  # x world: DDP averages the processes' gradients
                )
                loss.backward()  # type: ignore[union-attr]
            for name, value in terms.items():
                if own.get(name):
                    weight = share.get(name, 0) / own[name]
                    totals[name] = totals.get(name, 0.0) + float(value.detach()) * weight
        totals = {"loss": sum(scales[k] * v for k, v in totals.items()), **totals}
        if settings.max_grad_norm > 0:
            _clip(params, settings.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        last = {"step": done, "epoch": round(done / plan.steps_per_epoch, 4), "lr": lr, **totals}
        if procs.rank == 0 and (done % settings.log_every == 0 or done == plan.total_steps):
            rate = (done - start) / max(time.monotonic() - began, 1e-9)
            shown = " ".join(f"{k} {v:.4f}" for k, v in totals.items())
            echo(
                f"step {done}/{plan.total_steps} epoch {last['epoch']:.2f} {shown} "
                f"lr {lr:.2e} ({rate:.2f} steps/s)"
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


def finish(procs: Processes) -> None:
    """Leave torch.distributed cleanly (a process group left open can abort at exit)."""
    if procs.world > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def silent(_text: str) -> None:
    return None


def _barrier(procs: Processes) -> None:
    if procs.world > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _count(units: Units, items: Sequence[Any]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for item in items:
        for name, n in units(item).items():
            counted[name] = counted.get(name, 0) + n
    return counted


def _wrap(model: nn.Module, settings: LoopSettings, procs: Processes) -> nn.Module:
    model.to(procs.device)
    if procs.world == 1:
        return model
    ids = [procs.device.index] if procs.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _clip(params: list[nn.Parameter], max_norm: float) -> None:
    torch.nn.utils.clip_grad_norm_(params, max_norm)


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
    weights = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    final = out / f"checkpoint-{step}"
    temp = out / f".checkpoint-{step}.writing"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    save_files(temp)
    state = {
        "step": step,
        "fingerprint": run_fingerprint,
        "weights": weights,
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python_rng": json.dumps(random.getstate()),
    }
    torch.save(state, temp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    temp.rename(final)
    for old in checkpoints(out)[: -settings.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)


def _resume(
    out: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    run_fingerprint: str,
    echo: Echo,
    procs: Processes,
) -> int:
    found = checkpoints(out)
    if not found:
        return 0
    try:
        state = torch.load(found[-1] / STATE_FILE, weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise ConfigError(
            f"cannot read the checkpoint: {exc}".splitlines()[0],
            location=str(found[-1] / STATE_FILE),
            hint="delete this checkpoint folder to resume from the one before it",
        ) from None
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
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    python_state = json.loads(state["python_rng"])
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    if procs.rank == 0:
        _forget_after(out / "metrics.jsonl", int(state["step"]))
    _barrier(procs)
    echo(f"resuming from {found[-1]}")
    return int(state["step"])


def _forget_after(log: Path, step: int) -> None:
    """Drop the metrics lines of steps after ``step``: the resumed run logs them again."""
    if not log.is_file():
        return
    kept = [
        line
        for line in log.read_text(encoding="utf-8").splitlines()
        if json.loads(line)["step"] <= step
    ]
    atomic_write(log, "".join(line + "\n" for line in kept))


def _step_of(line: str) -> float:
    """A metrics line's step; a line cut short by a crash counts as after every step."""
    try:
        return float(json.loads(line)["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return math.inf
