"""Processes, devices and wrapping: one process, or torchrun's many.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group starts with gloo on the CPU and
NCCL on GPUs; each rank reads its own share of every batch (the sampler splits the
order by rank), and DDP averages the gradients, so N ranks of ``batch_size`` B train like
one process of ``N * B``. ``fsdp`` shards the model with FullyShardedDataParallel and
``deepspeed`` hands the model and ``deepspeed_config`` to ``deepspeed.initialize``: both
are written to those libraries' documented APIs and are untested here (no GPU).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from stagewise.config.training import TrainingSection
from stagewise.errors import ConfigError


@dataclass(frozen=True)
class Processes:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(setting: str, local_rank: int = 0) -> torch.device:
    if setting == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"training.device is {setting!r} but no CUDA device is available",
            location="training.device",
            hint="use device: auto or cpu",
        )
    return torch.device(setting)


def start(settings: TrainingSection) -> Processes:
    """Join torchrun's process group when there is one; pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(settings.device, local_rank)
    if world_size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend=backend)
    return Processes(rank, world_size, local_rank, device)


def autocast(precision: str, device: torch.device) -> Any:
    """Mixed precision for the forward pass: bf16 or fp16 autocast, or nothing for fp32.
    (bf16 runs on CPUs too; fp16 is meant for GPUs, where the loss is scaled.)"""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def stop() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def wrap(model: nn.Module, settings: TrainingSection, processes: Processes) -> nn.Module:
    """The model as the strategy trains it (unchanged in a single process)."""
    strategy = settings.strategy
    if not processes.distributed and strategy in ("auto", "ddp"):
        return model
    if strategy in ("auto", "ddp"):
        ids = [processes.device.index] if processes.device.type == "cuda" else None
        # A batch need not hold every dataset, so per-dataset input layers may get no
        # gradient in a step: DDP must look for unused parameters.
        return nn.parallel.DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=True
        )
    if strategy == "fsdp":
        if processes.device.type != "cuda":
            raise ConfigError(
                "strategy fsdp needs GPUs",
                location="training.strategy",
                hint="use strategy: ddp (gloo) on CPUs",
            )
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(model, device_id=processes.device)
    raise ConfigError(
        "strategy deepspeed is started by deepspeed_engine(), not wrap()",
        location="training.strategy",
    )


def full_weights(trained: nn.Module, model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights for a checkpoint. Under FSDP every rank must call this
    (the shards are gathered, to rank 0's CPU memory); otherwise it is the model's own
    state."""
    from stagewise.train.checkpoint import model_state

    if type(trained).__name__ == "FullyShardedDataParallel":  # untested here: no GPU
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        gather = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
        with FSDP.state_dict_type(trained, StateDictType.FULL_STATE_DICT, gather):
            return trained.state_dict()  # type: ignore[no-any-return]
    return model_state(getattr(trained, "module", model))


def clip_gradients(trained: nn.Module, model: nn.Module, max_norm: float) -> None:
    """Clip the gradients' norm; FSDP computes it across the shards itself."""
    if hasattr(trained, "clip_grad_norm_") and type(trained).__name__ == "FullyShardedDataParallel":
        trained.clip_grad_norm_(max_norm)
    else:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def deepspeed_engine(model: nn.Module, settings: TrainingSection) -> tuple[Any, Any]:
    """``deepspeed.initialize`` with the seed's ``--deepspeed_config`` file (GPU only;
    untested here). Checkpoints then keep the weights, not the optimizer's partitioned
    state: a resumed DeepSpeed run restarts its optimizer moments."""
    try:
        import deepspeed  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError(
            "strategy deepspeed needs DeepSpeed, which is not installed",
            location="training.strategy",
            hint="pip install deepspeed (on a GPU machine), or use strategy: ddp",
        ) from None
    if not settings.deepspeed_config:
        raise ConfigError(
            "strategy deepspeed needs training.deepspeed_config",
            location="training.deepspeed_config",
            hint="point it at a DeepSpeed JSON config such as the seed's configs/ds_s2.json",
        )
    # The config's optimizer (or AdamW's defaults) is built by DeepSpeed; the trainer sets
    # its learning rate every step from training.lr and the schedule, as without DeepSpeed.
    # Gradient clipping and fp16/bf16 come from the DeepSpeed config.
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=settings.deepspeed_config,
    )
    return engine, optimizer
