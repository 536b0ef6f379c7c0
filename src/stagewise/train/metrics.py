"""Per-dataset and overall metrics, with seed 003's names and tables.

A :class:`Tally` sums, per dataset, the loss, the samples and (for classification) the
correct predictions, or (for forecasting) the absolute, squared and relative errors. Its
sums are one tensor, so a distributed run reduces them across ranks with one
``all_reduce``. ``values(prefix)`` gives the seed's names: ``train_food101_loss``,
``eval_overall_accuracy``, ``final_eval_overall_samples``, ...
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

# Per-dataset sums, in this order in the tally tensor.
CLASSIFICATION = ("loss", "samples", "correct")
FORECASTING = ("loss", "samples", "abs_error", "sq_error", "rel_error", "points", "rel_points")
MAPE_FLOOR = 1e-3  # targets closer to zero than this are left out of MAPE
# Missing forecasting targets are NaN (a store preprocessed with ``missing: zero`` has its
# zeros read as NaN targets): they count in no loss and no metric.


class Tally:
    def __init__(self, names: Sequence[str], task: str = "classification") -> None:
        self.names = list(names)
        self.task = task
        self.fields = CLASSIFICATION if task == "classification" else FORECASTING
        self.sums = torch.zeros(len(self.names), len(self.fields), dtype=torch.float64)

    def add(
        self, dataset: torch.Tensor, losses: torch.Tensor, outputs: torch.Tensor, targets: Any
    ) -> None:
        """Add one batch: per-sample ``losses``; ``outputs`` are predicted classes
        (classification) or predictions (forecasting)."""
        dataset = dataset.detach().cpu()
        rows = torch.zeros(len(dataset), len(self.fields), dtype=torch.float64)
        rows[:, 0] = losses.detach().double().cpu()
        rows[:, 1] = 1.0
        if self.task == "classification":
            rows[:, 2] = (outputs.detach().cpu() == targets.detach().cpu()).double()
        else:
            truth = targets.detach().double().cpu().flatten(1)
            valid = ~torch.isnan(truth)  # a missing target is left out
            error = torch.where(valid, outputs.detach().double().cpu().flatten(1) - truth, 0.0)
            usable = valid & (truth.abs() > MAPE_FLOOR)
            relative = error.abs() / torch.where(usable, truth.abs(), 1.0)
            rows[:, 2] = error.abs().sum(1)
            rows[:, 3] = (error**2).sum(1)
            rows[:, 4] = torch.where(usable, relative, 0.0).sum(1)
            rows[:, 5] = valid.double().sum(1)
            rows[:, 6] = usable.double().sum(1)
        self.sums.index_add_(0, dataset.long(), rows)

    def reduce(self) -> None:
        """Sum across the ranks of a distributed run (a no-op otherwise)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            backend = torch.distributed.get_backend()
            device = "cuda" if backend == "nccl" else "cpu"
            sums = self.sums.to(device)
            torch.distributed.all_reduce(sums)
            self.sums = sums.cpu()

    def reduced_sums(self) -> list[list[float]]:
        """The sums of every rank together (a collective: every rank must call it); this
        tally is left as it is."""
        copy = Tally(self.names, self.task)
        copy.sums = self.sums.clone()
        copy.reduce()
        return copy.sums.tolist()

    def reset(self) -> None:
        self.sums.zero_()

    def per_dataset(self) -> dict[str, dict[str, float]]:
        out = {}
        for i, name in enumerate(self.names):
            row = dict(zip(self.fields, self.sums[i].tolist(), strict=True))
            if row["samples"]:
                out[name] = self._finish(row)
        return out

    def overall(self) -> dict[str, float]:
        row = dict(zip(self.fields, self.sums.sum(0).tolist(), strict=True))
        return self._finish(row) if row["samples"] else {}

    def _finish(self, row: Mapping[str, float]) -> dict[str, float]:
        n = row["samples"]
        out = {"loss": row["loss"] / n, "samples": int(n)}
        if self.task == "classification":
            out["accuracy"] = row["correct"] / n
            out["correct"] = int(row["correct"])
        else:
            if row["points"]:
                out["mae"] = row["abs_error"] / row["points"]
                out["rmse"] = math.sqrt(row["sq_error"] / row["points"])
            if row["rel_points"]:
                out["mape"] = row["rel_error"] / row["rel_points"]
        return out

    def values(
        self, prefix: str, *, datasets: bool = True, overall: bool = True
    ) -> dict[str, float]:
        """The seed's flat names: ``<prefix>_<dataset>_<metric>``,
        ``<prefix>_overall_<metric>``."""
        out: dict[str, float] = {}
        if datasets:
            for name, metrics in self.per_dataset().items():
                for key in ("loss", "accuracy", "mae", "rmse", "mape"):
                    if key in metrics:
                        out[f"{prefix}_{name}_{key}"] = metrics[key]
        if overall:
            for key, value in self.overall().items():
                if key != "correct":
                    out[f"{prefix}_overall_{key}"] = value
        return out

    def tracked(self, metric: str) -> float | None:
        """``overall_accuracy``, ``<dataset>_loss``, ...: the value best-model tracking
        compares (None when that dataset was not evaluated)."""
        scope, _, key = metric.rpartition("_")
        found = self.overall() if scope == "overall" else self.per_dataset().get(scope, {})
        value = found.get(key)
        return None if value is None else float(value)


def available_metrics(names: Sequence[str], task: str) -> list[str]:
    keys = ("accuracy", "loss") if task == "classification" else ("loss", "mae", "rmse", "mape")
    return [f"{scope}_{key}" for scope in ("overall", *names) for key in keys]


# ----------------------------------------------------------------------------- tables


def _num(metrics: Mapping[str, float], key: str, spec: str = ".4f") -> str:
    """A metric for a table; n/a when nothing could be measured (every target missing)."""
    return format(metrics[key], spec) if key in metrics else "n/a"


def _pct(value: float) -> str:
    return f"{value:.4f} ({value:.2%})"


def train_lines(tally: Tally) -> list[str]:
    """``📊 TRAIN - food101: Loss=0.5234, Acc=0.8567 (85.67%), Samples=1024``"""
    lines = []
    for name, m in tally.per_dataset().items():
        if tally.task == "classification":
            lines.append(
                f"📊 TRAIN - {name}: Loss={m['loss']:.4f}, Acc={_pct(m['accuracy'])}, "
                f"Samples={m['samples']}"
            )
        else:
            lines.append(
                f"📊 TRAIN - {name}: Loss={m['loss']:.4f}, MAE={_num(m, 'mae')}, "
                f"Samples={m['samples']}"
            )
    overall = tally.overall()
    if overall and tally.task == "classification":
        lines.append(
            f"📊 TRAIN - OVERALL: Acc={_pct(overall['accuracy'])}, Samples={overall['samples']}"
        )
    elif overall:
        lines.append(
            f"📊 TRAIN - OVERALL: Loss={overall['loss']:.4f}, MAE={_num(overall, 'mae')}, "
            f"Samples={overall['samples']}"
        )
    return lines


def eval_table(tally: Tally, title: str = "多数据集评估结果") -> str:
    """The seed's evaluation block: overall lines, then one section per dataset."""
    rule = "=" * 32
    overall = tally.overall()
    lines = [f"{rule} {title} {rule}"]
    if not overall:
        lines.append("(no samples)")
        return "\n".join(lines)
    lines.append(f"📈 Overall Loss:     {overall['loss']:.4f}")
    if tally.task == "classification":
        lines.append(f"🎯 Overall Accuracy: {_pct(overall['accuracy'])}")
    else:
        lines.append(f"🎯 Overall MAE:      {_num(overall, 'mae')}")
        lines.append(f"🎯 Overall RMSE:     {_num(overall, 'rmse')}")
        lines.append(f"🎯 Overall MAPE:     {_num(overall, 'mape', '.2%')}")
    lines.append(f"📊 Total Samples:    {overall['samples']:,}")
    if tally.task == "classification":
        lines.append(f"✅ Total Correct:    {overall['correct']:,}")
    for name, m in tally.per_dataset().items():
        lines.append("")
        lines.append(f"📂 {name}:")
        lines.append(f"  • Loss:     {m['loss']:.4f}")
        if tally.task == "classification":
            lines.append(f"  • Accuracy: {_pct(m['accuracy'])}")
            lines.append(f"  • Samples:  {m['samples']:,} (Correct: {m['correct']:,})")
        else:
            lines.append(f"  • MAE:      {_num(m, 'mae')}")
            lines.append(f"  • RMSE:     {_num(m, 'rmse')}")
            lines.append(f"  • MAPE:     {_num(m, 'mape', '.2%')}")
            lines.append(f"  • Samples:  {m['samples']:,}")
    lines.append("=" * 80)
    return "\n".join(lines)
