# ruff: noqa: T201
"""Issue 6: does the Quality-Gate score keep the good records? Selection quality on a
pool whose answer is known.

The pool: ``--pool N`` (default 128) clean chat records and N corrupted ones
(``stagewise.select.docstrings.clean_and_corrupted``: questions about standard-library
functions answered by their docstring, or by a damaged docstring: shuffled words, random
characters, a repeated fragment, cut mid-sentence; a quarter each), dataset ``docs``.
The target set: ``--targets`` (default 32) more clean records of other docstrings,
dataset ``target``, the warmup's ``dataset.target_path``.

The model: a tiny Qwen2 (``stagewise.select.tiny.build_tiny_base``, hidden 64, 4 layers,
1500 pretraining steps on the docstring corpus; built once and kept in the workdir),
converted with ``stagewise.select.gate.convert`` (scale_ffn gates).

The recipe, through the stages' Python APIs and YAML configs written to the workdir:
``warmup`` (full_rank: only the gates train; learning rate 5e-2, 12 epochs of batch 16,
max_seq_len 160: the llm-selection example's settings), ``score`` with the warmup's
gates (sort_by_length, batch 32), then the top 25% of the pool (k = ceil(0.25 x 2N)) by:

- the gate score as the recipe computes it: ``batch_selection.pick(root, 0.25)``
  (alpha 1: perplexity-weighted gates, per-layer normalization), its selected_data.jsonl;
- the same with alpha 0 (every real token weighs the same): ``pick(..., alpha=0.0)``;
- the plain mean gate of a record (mean over layers of the mean over its real tokens);
- perplexity alone: the lowest mean log perplexity over the real tokens first;
- random choice: the expected share (the pool's clean fraction) and the mean of 1000
  seeded random draws.

For each: the share of clean records among those kept, its ratio to random's, and the
share of each corruption kind among those kept. Repeated over ``--seeds`` (default 3:
data seed s, warmup seed 42 + s); the figures are the mean with the min-max over seeds.
The goal "gate score well above random" is met when the recipe's gate score keeps at
least 1.2x random's clean share. torch runs with its default thread count.

    .venv/bin/python benchmarks/select_quality.py           # 80 s on 2 vCPUs (30 s once the model is built)
    .venv/bin/python benchmarks/select_quality.py --quick   # smoke run, seconds
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from _report import table, verdict

from stagewise.config.loading import dump_yaml
from stagewise.config.selection import ScoreConfig, WarmupConfig, load_stage_config
from stagewise.select.batch_selection import SELECTED_FILE, pick
from stagewise.select.docstrings import CORRUPTIONS, clean_and_corrupted
from stagewise.select.gate import GATE_CONFIG, convert, quiet_transformers
from stagewise.select.router import ROUTER_FOLDER, SUFFIX
from stagewise.select.router import score as run_score
from stagewise.select.scoring import quality_scores, weighted_gates
from stagewise.select.tiny import build_tiny_base
from stagewise.select.warmup import warmup as run_warmup

CORES = os.cpu_count() or 1
KEEP = 0.25
KINDS = ("clean", *CORRUPTIONS)
GOAL = 1.2  # "well above random": at least this times random's clean share
RANDOM_DRAWS = 1000
REFERENCE = "gate score (recipe: pick, alpha 1)"
METHODS = (
    REFERENCE,
    "gate score, alpha 0 (pick, alpha=0.0)",
    "mean gate per record",
    "perplexity alone (lowest first)",
    f"random ({RANDOM_DRAWS} seeded draws)",
)
PERPLEXITY = METHODS[3]
RANDOM = METHODS[4]


def build_model(
    workdir: Path, steps: int, hidden: int, layers: int, echo: Callable[[str], None] = print
) -> Path:
    """The converted tiny model (built and converted once, kept in ``workdir``)."""
    folder = workdir / f"select-tiny-h{hidden}-l{layers}-s{steps}"
    converted = folder / "quality_gate"
    if (converted / GATE_CONFIG).is_file():
        return converted
    base = folder / "base"
    if not (base / "pretraining.json").is_file():  # written last: the base is complete
        shutil.rmtree(base, ignore_errors=True)
        began = time.perf_counter()
        echo(f"# building the tiny base model ({steps} steps, hidden {hidden}, {layers} layers)")
        build_tiny_base(base, steps=steps, hidden_size=hidden, layers=layers, echo=echo)
        echo(f"# built in {time.perf_counter() - began:.0f} s: {base}")
    shutil.rmtree(converted, ignore_errors=True)
    return convert(base, converted)


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        out.writelines(json.dumps(r) + "\n" for r in records)
    return path


def kind_of(sample_id: str) -> str:
    """``docs_clean_3`` -> clean, ``docs_random_characters_6`` -> random_characters."""
    return sample_id.split("_", 1)[1].rsplit("_", 1)[0]


def make_data(folder: Path, count: int, targets: int, seed: int) -> tuple[Path, Path]:
    clean, bad = clean_and_corrupted(count + targets, seed)
    pool = write_jsonl(folder / "pool.jsonl", clean[:count] + bad[:count])
    target = write_jsonl(
        folder / "target.jsonl", [r | {"dataset": "target"} for r in clean[count:]]
    )
    return pool, target


def write_configs(folder: Path, model: Path, pool: Path, target: Path) -> tuple[Path, Path]:
    """The two stages' YAML, the llm-selection example's settings; the per-run values
    (seed, output_dir, epochs, checkpoint) come as overrides."""
    warmup = {
        "stage": "warmup",
        "selector_model": {"path": str(model)},
        "dataset": {
            "data_path": [str(pool)],
            "target_path": [str(target)],
            "subset_ratio": 1.0,
            "max_seq_len": 160,
        },
        "training": {
            "peft_mode": "full_rank",
            "learning_rate": 5.0e-2,
            "batch_size": 16,
            "epochs": 12,
            "quality_loss_weight": 1.0,
            "quality_loss_balance": 1.0,
            "log_every": 20,
        },
    }
    selection = {
        "stage": "selection",
        "selector_model": {"path": str(model)},
        "dataset": {
            "data_path": [str(pool)],
            "subset_ratio": 1.0,
            "shuffle": False,
            "sort_by_length": True,
            "max_seq_len": 160,
        },
        "data_process": {"batch_size": 32},
    }
    paths = folder / "stage_1_warmup.yaml", folder / "stage_2_selection.yaml"
    for path, data in zip(paths, (warmup, selection), strict=True):
        path.write_text(dump_yaml(data), encoding="utf-8")
    return paths


def _set(key: str, value: Any) -> str:
    return f"{key}={json.dumps(str(value))}"


def load(model: Any, path: Path, overrides: list[str]) -> Any:
    config, warnings = load_stage_config(model, path, overrides)
    if warnings:
        raise RuntimeError("; ".join(w.render() for w in warnings))
    return config


def top(values: list[float], k: int, highest: bool = True) -> list[int]:
    """The rows of the k best values; ties keep the pool's order (as pick does)."""
    sign = -1.0 if highest else 1.0
    return sorted(range(len(values)), key=lambda i: (sign * values[i], i))[:k]


def kinds_kept(ids: Iterable[str]) -> dict[str, int]:
    counts = dict.fromkeys(KINDS, 0)
    for sample_id in ids:
        counts[kind_of(sample_id)] += 1
    return counts


def selected_ids(folder: Path) -> list[str]:
    lines = (folder / SELECTED_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["id"] for line in lines if line.strip()]


def one_seed(
    workdir: Path, model: Path, seed: int, count: int, targets: int, epochs: int
) -> dict[str, Any]:
    run = workdir / f"seed-{seed}"
    shutil.rmtree(run, ignore_errors=True)  # a fresh warmup and score every time
    run.mkdir(parents=True)
    pool, target = make_data(run / "data", count, targets, seed)
    warmup_yaml, score_yaml = write_configs(run, model, pool, target)
    lines: list[str] = []
    began = time.perf_counter()
    warmup_config = load(
        WarmupConfig,
        warmup_yaml,
        [f"seed={42 + seed}", _set("output_dir", run / "warmup"), f"training.epochs={epochs}"],
    )
    warmed = run_warmup(warmup_config, echo=lines.append)
    warmed_at = time.perf_counter()
    score_config = load(
        ScoreConfig,
        score_yaml,
        [_set("output_dir", run / "score"), _set("model_checkpoint_path", warmed.output_dir)],
    )
    run_score(score_config, echo=lines.append)
    scored_at = time.perf_counter()

    root = run / "score"
    (reference,) = pick(root, KEEP)
    pick(root, KEEP, alpha=0.0, out=run / "alpha0")
    picked_at = time.perf_counter()
    data = torch.load(root / ROUTER_FOLDER / f"docs{SUFFIX}", weights_only=True)
    gates, ppl = data["quality_gates"].double(), data["perplexities"].double()
    ids = [str(i) for i in data["sample_ids"]]
    n = len(ids)
    k = math.ceil(KEEP * n)
    if reference.selected != k:
        raise RuntimeError(f"pick kept {reference.selected} of {n}, expected {k}")
    real = ppl > 0  # [N, T]
    tokens = real.sum(dim=1).clamp_min(1)
    mean_gate = ((gates * real.unsqueeze(1)).sum(-1) / tokens.unsqueeze(1)).mean(1)
    log_ppl = torch.where(real, ppl.clamp_min(1e-30).log(), torch.zeros_like(ppl)).sum(1) / tokens
    # The recipe's score recomputed here: its top k must be pick's (a check of pick).
    recomputed = quality_scores(weighted_gates(gates, ppl, 1.0)).tolist()
    check = {ids[i] for i in top(recomputed, k)} == set(selected_ids(root))

    kept: dict[str, dict[str, float]] = {
        METHODS[0]: kinds_kept(selected_ids(root)),
        METHODS[1]: kinds_kept(selected_ids(run / "alpha0")),
        METHODS[2]: kinds_kept(ids[i] for i in top(mean_gate.tolist(), k)),
        PERPLEXITY: kinds_kept(ids[i] for i in top(log_ppl.tolist(), k, highest=False)),
    }
    draws = dict.fromkeys(KINDS, 0.0)
    rng = random.Random(seed)
    for _ in range(RANDOM_DRAWS):
        for kind, c in kinds_kept(rng.sample(ids, k)).items():
            draws[kind] += c / RANDOM_DRAWS
    kept[RANDOM] = draws
    clean = torch.tensor([kind_of(i) == "clean" for i in ids])
    return {
        "seed": seed,
        "n": n,
        "k": k,
        "clean_fraction": float(clean.double().mean()),
        "pool": kinds_kept(ids),
        "shares": {m: {kind: c / k for kind, c in counts.items()} for m, counts in kept.items()},
        "pick_agrees": check,
        "warmup_last": warmed.last,
        "diagnostics": {
            "mean gate, clean": float(mean_gate[clean].mean()),
            "mean gate, corrupted": float(mean_gate[~clean].mean()),
            "mean log ppl, clean": float(log_ppl[clean].mean()),
            "mean log ppl, corrupted": float(log_ppl[~clean].mean()),
        },
        "times": {
            "warmup": warmed_at - began,
            "score": scored_at - warmed_at,
            "pick": picked_at - scored_at,
        },
    }


def spread(values: list[float], fmt: str = "{:.1%}") -> str:
    return f"{fmt.format(min(values))}-{fmt.format(max(values))}"


def report(found: list[dict[str, Any]]) -> dict[str, Any]:
    n, k = found[0]["n"], found[0]["k"]
    clean_fraction = found[0]["clean_fraction"]
    seeds = len(found)

    def clean_shares(method: str) -> list[float]:
        return [f["shares"][method]["clean"] for f in found]

    def ratios(method: str) -> list[float]:
        return [f["shares"][method]["clean"] / f["clean_fraction"] for f in found]

    rows = [
        [
            "random, expected (the pool's clean fraction)",
            f"{clean_fraction:.1%}",
            "",
            "1.00x",
            "",
        ]
    ]
    for method in METHODS:
        shares, r = clean_shares(method), ratios(method)
        rows.append(
            [
                method,
                f"{statistics.mean(shares):.1%}",
                spread(shares),
                f"{statistics.mean(r):.2f}x",
                spread(r, "{:.2f}x"),
            ]
        )
    print()
    print(
        table(
            f"Clean share of the kept top {KEEP:.0%} (k = {k} of {n}; the pool is "
            f"{clean_fraction:.0%} clean): mean over {seeds} seed(s)",
            ["method", "clean share", "min-max", "ratio to random", "ratio, min-max"],
            rows,
        )
    )
    pool_share = {kind: found[0]["pool"][kind] / n for kind in KINDS}
    kind_rows = [["the pool", *(f"{pool_share[kind]:.1%}" for kind in KINDS)]]
    for method in METHODS:
        kind_rows.append(
            [
                method,
                *(
                    f"{statistics.mean(f['shares'][method][kind] for f in found):.1%}"
                    for kind in KINDS
                ),
            ]
        )
    print()
    print(
        table(
            f"What each method kept, by kind (share of the {k} kept; mean over {seeds} seed(s))",
            ["method", *KINDS],
            kind_rows,
        )
    )
    seed_rows = [
        [
            str(f["seed"]),
            *(f"{f['shares'][m]['clean']:.1%}" for m in METHODS),
            f"{f['diagnostics']['mean gate, clean']:.4f} / "
            f"{f['diagnostics']['mean gate, corrupted']:.4f}",
            f"{f['diagnostics']['mean log ppl, clean']:.2f} / "
            f"{f['diagnostics']['mean log ppl, corrupted']:.2f}",
            "yes" if f["pick_agrees"] else "NO",
        ]
        for f in found
    ]
    print()
    print(
        table(
            "Per seed: clean share kept; mean gate and mean log perplexity, clean / corrupted "
            "records; pick's top k = the score recomputed here",
            [
                "seed",
                "gate score",
                "alpha 0",
                "mean gate",
                "perplexity",
                "random",
                "mean gate c / x",
                "log ppl c / x",
                "pick agrees",
            ],
            seed_rows,
        )
    )
    gate = statistics.mean(ratios(REFERENCE))
    perplexity = statistics.mean(ratios(PERPLEXITY))
    gate_shares, ppl_shares = clean_shares(REFERENCE), clean_shares(PERPLEXITY)
    print()
    print(
        table(
            "Goal",
            ["goal", "measured", "verdict"],
            [
                [
                    f"gate score well above random (clean share >= {GOAL:.1f}x random's)",
                    f"{statistics.mean(gate_shares):.1%} against {clean_fraction:.0%}: "
                    f"ratio {gate:.2f}x (seeds {spread(ratios(REFERENCE), '{:.2f}x')})",
                    verdict(gate >= GOAL),
                ],
                [
                    "gate score against perplexity alone (diagnostic)",
                    f"{statistics.mean(gate_shares):.1%} against "
                    f"{statistics.mean(ppl_shares):.1%}: ratio {gate / perplexity:.2f}x",
                    "gate score ahead"
                    if gate > perplexity
                    else ("level" if gate == perplexity else "perplexity alone ahead"),
                ],
            ],
        )
    )
    return {"gate_ratio": gate, "perplexity_ratio": perplexity}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/stagewise-bench")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--seeds", type=int, default=None, help="runs (data and warmup seeds)")
    parser.add_argument("--pool", type=int, default=None, help="clean (= corrupted) records")
    parser.add_argument("--targets", type=int, default=None, help="target-task records")
    parser.add_argument("--epochs", type=int, default=None, help="warmup epochs")
    parser.add_argument("--base-steps", type=int, default=None, help="pretraining steps")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        workdir = Path(args.workdir) / "quick"
        seeds, count, targets, epochs = 1, 16, 8, 2
        steps, hidden, layers = 40, 32, 2
    else:
        workdir = Path(args.workdir)
        seeds, count, targets, epochs = 3, 128, 32, 12
        steps, hidden, layers = 1500, 64, 4
    seeds = args.seeds or seeds
    count, targets = args.pool or count, args.targets or targets
    epochs, steps = args.epochs or epochs, args.base_steps or steps
    logging.getLogger("stagewise").setLevel(logging.WARNING)
    quiet_transformers()
    workdir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    print(
        f"# select_quality: {CORES} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads, its default), workdir {workdir}, {seeds} seed(s); "
        f"pool {count} clean + {count} corrupted, {targets} target records, warmup "
        f"{epochs} epochs"
    )
    model = build_model(workdir, steps, hidden, layers)
    built = time.perf_counter()
    print(f"# model: {model} (hidden {hidden}, {layers} layers, {steps} pretraining steps)")
    found = []
    for seed in range(seeds):
        result = one_seed(workdir / "select-quality", model, seed, count, targets, epochs)
        times = result["times"]
        last = result["warmup_last"]
        print(
            f"# seed {seed}: warmup {times['warmup']:.1f} s (last step: loss {last['loss']:.3f}, "
            f"ce {last['ce']:.3f}, quality loss {last['quality_loss']:.3f}), score "
            f"{times['score']:.1f} s, pick {times['pick']:.1f} s"
        )
        found.append(result)
    summary = report(found)
    ended = time.perf_counter()
    print(
        f"\n# model ready in {built - began:.1f} s; {seeds} seed(s) in {ended - built:.1f} s; "
        f"total {ended - began:.1f} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": found, **summary}, indent=2))


if __name__ == "__main__":
    main()
