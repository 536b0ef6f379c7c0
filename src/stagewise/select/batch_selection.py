"""Batch selection (seed 001's ``scripts/batch_selection.py``): keep the best records.

Every folder under ROOT that holds ``router_data/*_router_data.pt`` is one experiment.
For each, the quality score q (:mod:`stagewise.select.scoring`) of every record is
computed and the top ``ceil(percentage x N)`` are kept:

- ``scope: global`` (the reference): the datasets are pooled, normalized together and the
  best of the pool kept, so a dataset may give more or fewer than its share;
- ``scope: per_dataset``: each dataset is scored on its own and gives its own top share.

Ties keep the datasets' order and the records' order. The experiment folder gets
``selected_data.jsonl`` ({dataset, id, scores, messages} per line, best first) and
``selection_config.yaml`` (the settings and counts). The messages are read again from the
data files the selection stage recorded (or ``data``, when they moved).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from stagewise.config.loading import dump_yaml
from stagewise.errors import ConfigError, DataError
from stagewise.select.records import read_records
from stagewise.select.router import PROGRESS, ROUTER_FOLDER, SUFFIX
from stagewise.select.scoring import EPS, quality_scores, weighted_gates
from stagewise.store.atomic import atomic_write

SELECTED_FILE = "selected_data.jsonl"
CONFIG_FILE = "selection_config.yaml"
KEYS = ("quality_gates", "perplexities", "sample_ids", "dataset_name", "num_samples")
Scope = Literal["global", "per_dataset"]


@dataclass(frozen=True)
class Selection:
    experiment: Path
    selected: int
    total: int
    per_dataset: dict[str, tuple[int, int]]  # dataset -> (kept, of)


def pick(
    root: Path,
    percentage: float,
    *,
    scope: Scope = "global",
    alpha: float = 1.0,
    eps: float = EPS,
    data: Sequence[str] | None = None,
    out: Path | None = None,
) -> list[Selection]:
    """Select in every experiment under ``root``; ``out`` (one experiment only) puts the
    files there instead of in the experiment's folder."""
    if isinstance(percentage, bool) or not 0 < percentage <= 1:
        raise ConfigError(
            f"selection percentage {percentage!r} is outside (0, 1]",
            location="--percentage",
            hint="give the share to keep as a fraction: 0.05 keeps the best 5%",
        )
    if scope not in ("global", "per_dataset"):
        raise ConfigError(f"unknown scope {scope!r}", hint="use global or per_dataset")
    folders = sorted(
        {p.parent for p in Path(root).rglob(f"*{SUFFIX}") if p.parent.name == ROUTER_FOLDER}
    )
    if not folders:
        raise DataError(
            f"no {ROUTER_FOLDER}/*{SUFFIX} files under this folder",
            location=str(root),
            hint="run 'stagewise select score CONFIG' first and point at its output folder",
        )
    if out is not None and len(folders) > 1:
        raise DataError(
            f"{len(folders)} experiments under this folder; an output folder takes one",
            location=str(root),
            hint="point at one selection run's output folder",
        )
    return [_select(f, percentage, scope, alpha, eps, data, out or f.parent) for f in folders]


def share(fraction: float, count: int) -> int:
    """ceil(fraction x count), without float error turning 0.07 x 100 into 8."""
    return math.ceil(round(fraction * count, 9))


def load_router_data(path: Path) -> dict:
    """One router data file, checked for seed 001's keys."""
    try:
        loaded = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise DataError(
            f"cannot read router data: {exc}".splitlines()[0],
            location=str(path),
            hint="re-run the selection stage that wrote it",
        ) from None
    missing = [k for k in KEYS if not isinstance(loaded, dict) or k not in loaded]
    if missing:
        raise DataError(
            f"not a router data file: no {', '.join(missing)}",
            location=str(path),
            hint="router_data/ may only hold the selection stage's *_router_data.pt files",
        )
    return loaded


def _select(
    folder: Path,
    percentage: float,
    scope: Scope,
    alpha: float,
    eps: float,
    data: Sequence[str] | None,
    experiment: Path,
) -> Selection:
    if (folder.parent / PROGRESS).exists():
        raise DataError(
            "the selection stage that writes here has not finished",
            location=str(folder.parent / PROGRESS),
            hint="run the same 'stagewise select score' command again to finish it, then pick",
        )
    files = sorted(folder.glob(f"*{SUFFIX}"))
    parts = [load_router_data(p) for p in files]
    runs = {str(p.get("metadata", {}).get("run_id")) for p in parts}
    if len(runs) > 1:
        listing = "; ".join(
            f"{f.name}: run {p.get('metadata', {}).get('run_id')}"
            for f, p in zip(files, parts, strict=True)
        )
        raise DataError(
            "router data files from different selection runs are mixed in one folder",
            location=str(folder),
            hint=f"keep one run's files per router_data/ folder ({listing})",
        )
    layers = {p["quality_gates"].shape[1] for p in parts}
    if len(layers) > 1:
        raise DataError(
            f"router data files with different layer counts {sorted(layers)}",
            location=str(folder),
            hint="keep one model's files per router_data/ folder",
        )
    weighted = [weighted_gates(p["quality_gates"], p["perplexities"], alpha, eps) for p in parts]
    names = [str(p["dataset_name"]) for p in parts]
    if scope == "global":
        pooled = quality_scores(torch.cat(weighted), eps)
        scores = list(torch.split(pooled, [w.size(0) for w in weighted]))
        groups = [list(range(len(parts)))]
    else:
        scores = [quality_scores(w, eps) for w in weighted]
        groups = [[d] for d in range(len(parts))]
    chosen: list[tuple[float, int, int]] = []  # (score, dataset index, row)
    for group in groups:
        pool = [(float(scores[d][r]), d, r) for d in group for r in range(scores[d].numel())]
        pool.sort(key=lambda item: (-item[0], item[1], item[2]))
        chosen += pool[: share(percentage, len(pool))]
    chosen.sort(key=lambda item: (-item[0], item[1], item[2]))

    files_read = data or parts[0].get("metadata", {}).get("data_files") or []
    records = {(r.dataset, r.id): r for r in read_records(files_read, what="the data files")}
    experiment.mkdir(parents=True, exist_ok=True)
    lines = []
    for value, d, r in chosen:
        key = (names[d], str(parts[d]["sample_ids"][r]))
        record = records.get(key)
        if record is None:
            raise DataError(
                f"record {key[1]!r} of dataset {key[0]!r} is not in the data files",
                location=str(files[d]),
                hint="pass the data the selection stage scored with --data",
            )
        lines.append(
            json.dumps(
                {
                    "dataset": key[0],
                    "id": key[1],
                    "scores": value,
                    "messages": list(record.messages),
                },
                ensure_ascii=False,
            )
        )
    atomic_write(experiment / SELECTED_FILE, "".join(line + "\n" for line in lines))
    counts = {
        name: (sum(1 for _, d, _ in chosen if d == i), parts[i]["num_samples"])
        for i, name in enumerate(names)
    }
    settings = {
        "selection_percentage": percentage,
        "scope": scope,
        "alpha": alpha,
        "eps": eps,
        "run_id": runs.pop(),
        "router_data": [str(f) for f in files],
        "selected": len(chosen),
        "total": sum(p["num_samples"] for p in parts),
        "per_dataset": {n: {"selected": k, "of": t} for n, (k, t) in counts.items()},
    }
    atomic_write(experiment / CONFIG_FILE, dump_yaml(settings))
    return Selection(experiment, len(chosen), settings["total"], counts)
