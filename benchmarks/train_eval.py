# ruff: noqa: T201
"""Issue 5: what partial evaluation saves. Wall time of a training epoch that evaluates on
each dataset's ``eval_ratio`` share (partial) against the same epoch evaluating on all the
evaluation data (every ``eval_ratio`` 1.0), same data, same seed, same model.

Data: the training quickstart's four datasets, every record repeated ``--tile`` times
(default 32), as sample stores (``benchmarks/train_input.py`` builds them and both
scripts share them): 64,576 training and 21,632 evaluation samples. The run is the real
recipe, ``stagewise.train.recipe.train``, on the quickstart's config without its release
(the stores as ``data.train_stores``/``val_stores``, the mlp of hidden 128, batch 32,
evaluation batch 128), one epoch, a partial evaluation at the epoch's end
(``eval_every`` unset; ``--evals-per-epoch N`` evaluates N times an epoch instead), no
full evaluation at the end. Partial ratios (``--ratios``): the seed's example values,
0.1 for the largest dataset (digits) and 0.2 for the others.

Timed, by wrapping two of the recipe's module functions (nothing else changes): each
call of ``evaluate`` (the evaluation), and the epoch from its first batch to its last
step or evaluation (training steps + evaluation), in wall time and in CPU time; also the
whole ``train()`` call (reading the stores, building the model, checkpoints).
``torch.set_num_threads(1)``. Rounds alternate the two settings; figures are medians over
rounds. The training steps are the same work in both settings, so the script also gives
the epoch as their median over every run plus each setting's evaluation: on a shared
machine their noise can be larger than the evaluation itself.

    .venv/bin/python benchmarks/train_eval.py           # about two minutes
    .venv/bin/python benchmarks/train_eval.py --quick   # smoke run, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from _report import table
from train_input import DATASETS, build, train_config

from stagewise.train import recipe
from stagewise.train.sources import load_data

CORES = os.cpu_count() or 1
SEED_RATIOS = {"digits": 0.1, "wine": 0.2, "iris": 0.2, "breast_cancer": 0.2}
PARTIAL, FULL = "partial", "full"


def now() -> tuple[float, float]:
    """Wall time and this process's CPU time (one torch thread: the work itself, less
    sensitive than wall time to other jobs on the shared machine)."""
    return time.perf_counter(), time.process_time()


class Clock:
    """Wraps ``recipe.evaluate`` and ``recipe.batches`` for one ``train()`` call."""

    def __init__(self) -> None:
        self.epoch_start: tuple[float, float] | None = None
        self.batches_end = (0.0, 0.0)
        self.evaluations: list[tuple[tuple[float, float], tuple[float, float], int]] = []

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        evaluate, batches = recipe.evaluate, recipe.batches

        def timed_evaluate(model: Any, split: Any, *args: Any, **kwargs: Any) -> Any:
            began = now()
            tally = evaluate(model, split, *args, **kwargs)
            self.evaluations.append((began, now(), split.total))
            return tally

        def timed_batches(*args: Any, **kwargs: Any) -> Iterator[Any]:
            if self.epoch_start is None:
                self.epoch_start = now()
            yield from batches(*args, **kwargs)
            self.batches_end = now()

        recipe.evaluate, recipe.batches = timed_evaluate, timed_batches
        try:
            yield
        finally:
            recipe.evaluate, recipe.batches = evaluate, batches


def one_run(
    folder: Path, out: Path, ratios: dict[str, float], evals: int, steps: int
) -> dict[str, float]:
    """One ``train()`` of one epoch; its times (``cpu_`` keys: CPU time)."""
    shutil.rmtree(out, ignore_errors=True)
    config = train_config(
        folder,
        eval_ratios=ratios,
        epochs=1,
        output_dir=str(out),
        eval_every=None if evals == 1 else max(1, steps // evals),
        evaluation={"partial_eval_during_training": True, "full_eval_at_end": False},
    )
    clock = Clock()
    lines: list[str] = []
    began = now()
    with clock.installed():
        result = recipe.train(config, resume=False, echo=lines.append)
    ended = now()
    if result.steps != steps or not clock.evaluations or clock.epoch_start is None:
        raise RuntimeError(f"run: {result.steps} steps, {len(clock.evaluations)} evaluations")
    shutil.rmtree(out, ignore_errors=True)
    found: dict[str, float] = {
        "evaluated": sum(n for _, _, n in clock.evaluations),
        "evaluations": len(clock.evaluations),
    }
    for i, prefix in enumerate(("", "cpu_")):
        evaluation = sum(end[i] - start[i] for start, end, _ in clock.evaluations)
        last = max(clock.evaluations[-1][1][i], clock.batches_end[i])
        epoch = last - clock.epoch_start[i]
        found |= {
            f"{prefix}evaluation": evaluation,
            f"{prefix}epoch": epoch,
            f"{prefix}steps": epoch - evaluation,
            f"{prefix}total": ended[i] - began[i],
        }
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/stagewise-bench")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--tile", type=int, default=None, help="copies of every record")
    parser.add_argument("--evals-per-epoch", type=int, default=1)
    parser.add_argument(
        "--ratios",
        default=None,
        help="partial eval_ratio per dataset as JSON (default: digits 0.1, the others 0.2)",
    )
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        workdir, tile, runs = Path(args.workdir) / "quick", args.tile or 1, args.runs or 2
    else:
        workdir, tile, runs = Path(args.workdir), args.tile or 32, args.runs or 5
    ratios = {**SEED_RATIOS, **json.loads(args.ratios)} if args.ratios else SEED_RATIOS
    torch.set_num_threads(1)
    logging.getLogger("stagewise").setLevel(logging.WARNING)
    workdir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    print(
        f"# train_eval: {CORES} cores, torch {torch.__version__} with "
        f"set_num_threads({torch.get_num_threads()}), workdir {workdir}, runs {runs}"
    )
    folder = build(workdir, tile)
    settings = {PARTIAL: ratios, FULL: dict.fromkeys(DATASETS, 1.0)}
    probe = load_data(train_config(folder), "classification")
    steps = -(-probe.train.total // 32)
    evals = args.evals_per_epoch
    found: dict[str, list[dict[str, float]]] = {PARTIAL: [], FULL: []}
    one_run(folder, workdir / "train-eval-out", settings[FULL], evals, steps)  # warm-up
    for run in range(runs):
        order = [PARTIAL, FULL] if run % 2 == 0 else [FULL, PARTIAL]
        for name in order:
            out = workdir / "train-eval-out"
            found[name].append(one_run(folder, out, settings[name], evals, steps))

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in found[name])

    def ratio_spread(key: str) -> str:
        ratios_ = [p[key] / f[key] for p, f in zip(found[PARTIAL], found[FULL], strict=True)]
        return f"{min(ratios_):.2f}-{max(ratios_):.2f}x"

    evaluated = {name: found[name][0]["evaluated"] for name in found}
    rows = [
        [
            "samples evaluated",
            f"{int(evaluated[PARTIAL]):,}",
            f"{int(evaluated[FULL]):,}",
            f"{evaluated[PARTIAL] / evaluated[FULL]:.2f}x",
            "",
        ]
    ]
    for key, label in (
        ("evaluation", "evaluation (every evaluate() call)"),
        ("steps", "training steps (the epoch less its evaluation)"),
        ("epoch", "epoch: first batch to its last step or evaluation"),
        ("total", "whole train() call (read stores, build model, checkpoints)"),
    ):
        p, f = median(PARTIAL, key), median(FULL, key)
        rows.append([label, f"{p:.3f} s", f"{f:.3f} s", f"{p / f:.2f}x", ratio_spread(key)])
    # The training steps are the same work in both settings (same seed, data and model):
    # their median over every run, plus each setting's evaluation, is the epoch without
    # the machine's noise in the steps.
    steps_all = statistics.median(r["steps"] for runs_ in found.values() for r in runs_)
    eval_partial, eval_full = median(PARTIAL, "evaluation"), median(FULL, "evaluation")
    derived = (steps_all + eval_partial) / (steps_all + eval_full)
    rows.append(
        [
            "epoch: steps (median of all runs) + evaluation",
            f"{steps_all + eval_partial:.3f} s",
            f"{steps_all + eval_full:.3f} s",
            f"{derived:.2f}x",
            "",
        ]
    )
    for key, label in (
        ("cpu_evaluation", "CPU time: evaluation"),
        ("cpu_steps", "CPU time: training steps"),
        ("cpu_epoch", "CPU time: epoch"),
    ):
        p, f = median(PARTIAL, key), median(FULL, key)
        rows.append([label, f"{p:.3f} s", f"{f:.3f} s", f"{p / f:.2f}x", ratio_spread(key)])
    shares = ", ".join(f"{n} {r:g}" for n, r in ratios.items())
    print()
    print(
        table(
            f"Partial vs full evaluation: one epoch of {probe.train.total:,} samples ({steps} "
            f"steps of 32), {evals} evaluation(s) an epoch, partial eval_ratio {shares}; "
            f"median of {runs}",
            ["what", "partial", "full", "ratio: partial / full", "ratio, single runs"],
            rows,
        )
    )
    print(
        f"# the full evaluation is {eval_full / (steps_all + eval_full):.1%} of the epoch; "
        f"partial evaluation saves {1 - derived:.1%} of it "
        f"({(eval_full - eval_partial) * 1e3:.0f} ms an epoch)"
    )
    print(f"\n# total {time.perf_counter() - began:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": found, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
