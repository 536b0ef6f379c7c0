"""Losses, and evaluation: partial during training, full at the end, on all ranks.

- :func:`masked_logits`: each sample's logits beyond its dataset's classes set to the
  lowest value, so they take no probability and are never predicted.
- :func:`losses_of`: per-sample losses (cross-entropy, or mean absolute error when
  forecasting) and what the metrics compare.
- :func:`evaluate`: one pass over a split; ranks share the batches and sum their tallies.
- :func:`final_evaluation`: the full evaluation of the best model (and of every kept
  model when asked), printed as seed 003's tables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from stagewise.config.training import TrainConfig
from stagewise.train import checkpoint, distributed
from stagewise.train.data import Split, describe_loading, eval_batches
from stagewise.train.metrics import Tally, eval_table
from stagewise.train.sources import Data

BEST_DIR = "best_model"


def masked_logits(
    logits: torch.Tensor, dataset: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    """Logits beyond each sample's dataset's num_classes set to the lowest value, so they
    take no probability and are never predicted."""
    columns = torch.arange(logits.shape[-1], device=logits.device)
    outside = columns[None, :] >= classes[dataset][:, None]
    return logits.masked_fill(outside, torch.finfo(logits.dtype).min)


def losses_of(
    outputs: torch.Tensor, batch: Any, task: str, classes: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample losses, and what the metrics compare (predicted classes, or forecasts)."""
    if task == "forecasting":  # missing targets (NaN) count in neither loss nor metrics
        targets = batch.targets.flatten(1)
        valid = ~torch.isnan(targets)
        error = torch.where(valid, outputs.float().flatten(1) - targets, 0.0)
        per_sample = error.abs().sum(1) / valid.sum(1).clamp_min(1)
        return per_sample, outputs.detach()
    if classes is not None:
        outputs = masked_logits(outputs, batch.dataset, classes)
    per_sample = F.cross_entropy(outputs.float(), batch.targets, reduction="none")
    return per_sample, outputs.argmax(-1)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    split: Split,
    names: list[str],
    *,
    task: str,
    classes: torch.Tensor | None,
    batch_size: int,
    processes: distributed.Processes,
    precision: str = "fp32",
    shard: bool = True,
) -> Tally:
    """One pass over ``split``; ranks share the batches and the sums are reduced. With
    ``shard`` False every rank runs every batch (a sharded FSDP model needs all ranks in
    each forward pass) and nothing is reduced."""
    was_training = model.training
    model.eval()
    tally = Tally(names, task)
    rank, world_size = (processes.rank, processes.world_size) if shard else (0, 1)
    for batch in eval_batches(split, names, batch_size, rank=rank, world_size=world_size):
        batch = batch.to(processes.device)
        with distributed.autocast(precision, processes.device):
            outputs = model(batch)
        per_sample, compared = losses_of(outputs, batch, task, classes)
        tally.add(batch.dataset, per_sample, compared, batch.targets)
    if shard:
        tally.reduce()
    model.train(was_training)
    return tally


def final_evaluation(
    config: TrainConfig,
    model: torch.nn.Module,
    data: Data,
    out: Path,
    best: Mapping[str, Any] | None,
    task: str,
    classes: torch.Tensor | None,
    eval_size: int,
    processes: distributed.Processes,
    say: Callable,
    runner: torch.nn.Module | None = None,
) -> dict[str, float]:
    """The full eval split, on the best model (and every saved model when asked)."""
    settings = config.training
    if processes.distributed:  # rank 0 wrote the models: every rank must see them
        torch.distributed.barrier()
    targets: list[tuple[str, Path | None]] = []
    if best is not None and (out / BEST_DIR / checkpoint.MODEL_FILE).exists():
        targets.append(("best", out / BEST_DIR))
    else:
        targets.append(("final", None))
    if not settings.evaluation.eval_best_model_only:
        models = sorted((out / "models").glob("step-*")) if (out / "models").exists() else []
        targets += [(p.name, p) for p in models]
        if targets[0][1] is not None:
            targets.append(("final", None))
    results: dict[str, float] = {}
    final_state = {k: v.clone() for k, v in model.state_dict().items()}
    for label, folder in targets:
        if folder is not None:
            checkpoint.load_weights(model, folder)
        else:
            model.load_state_dict(final_state)
        title = "最佳模型" if label == "best" else f"模型 {label}"
        say(f"🔍 开始对{title}进行完整评估\n{'=' * 80}")
        say(describe_loading(data.val, "评估模式"))
        tally = evaluate(
            runner or model, data.val, data.names, task=task, classes=classes,
            batch_size=eval_size, processes=processes, precision=settings.precision,
            shard=runner is None,
        )  # fmt: skip
        say(eval_table(tally, f"{title}完整评估结果"))
        overall = tally.overall()
        if task == "classification" and overall:
            say(
                f"🎯 {title}完整评估结果:\n"
                f"   • 整体准确率: {overall['accuracy']:.4f} ({overall['accuracy']:.2%})\n"
                f"   • 总样本数: {overall['samples']:,}\n"
                f"   • 正确样本数: {overall['correct']:,}"
            )
        prefix = "final_eval" if label in ("best", "final") and not results else f"eval_{label}"
        results |= tally.values(prefix)
    model.load_state_dict(final_state)
    return results
