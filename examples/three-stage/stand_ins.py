"""Seed 001's three stages as pipeline tasks: stand-ins until the selection issue replaces them.

Each function reads and writes real files in the seed's shapes, but none trains a
language model: the quality gate is token statistics, not a trained Quality-Gate model,
and finetune writes what it would train on instead of LoRA weights. What is real is the
pipeline around them: the wiring of outputs to inputs, the seed's parameters (overridden
from the command line as in the seed: ``training.learning_rate=1e-3``), the timestamped
output folders, caching and resume.

    warmup           chats -> model_checkpoint/full_rank_weights.json (a weight per token)
    selection        chats + gate -> router_data/<dataset>_router_data.jsonl (per record:
                     quality gate score and perplexity)
    batch_selection  router data -> selected_data/selected_data.jsonl (the top
                     selection_percentage of records by gate score, over all data sets)
    finetune         selected data -> checkpoint/checkpoint-final/ (adapter_config.json
                     and training_summary.json)
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

STAND_IN = "stand-in until the selection issue replaces it"
WEIGHTS_FILE = "full_rank_weights.json"
SELECTED_FILE = "selected_data.jsonl"


def warmup(
    data: str,
    model_checkpoint: str,
    training: dict[str, Any],
    subset_ratio: float = 0.025,
    seed: int = 0,
) -> dict[str, Any]:
    """Stage 1: gate weights from a subset of the data (seed: dataset.subset_ratio).

    A token's weight is its inverse document frequency over the subset's answers: filler
    that every answer repeats weighs little, specific words weigh more."""
    records = _read(data)
    subset = random.Random(seed).sample(records, max(1, round(len(records) * subset_ratio)))
    frequency = Counter(t for r in subset for t in set(_tokens(_answer(r))))
    n = len(subset)
    weights = {t: math.log((1 + n) / (1 + df)) + 1.0 for t, df in sorted(frequency.items())}
    folder = Path(model_checkpoint)
    folder.mkdir(parents=True)
    gate = {
        "stand_in": STAND_IN,
        "tokens": weights,
        "unseen": math.log(1 + n) + 1.0,  # a token the subset never used: rare, so weighty
        "records": n,
        "training": training,  # recorded: the real warmup trains with these
    }
    (folder / WEIGHTS_FILE).write_text(json.dumps(gate, indent=1) + "\n")
    print(f"warmup: {len(weights)} token weights from {n} of {len(records)} records")
    return {"records": n, "tokens": len(weights)}


def selection(
    data: str,
    model_checkpoint: str,
    router_data: str,
    data_process: dict[str, Any],
    sort_by_length: bool = True,
) -> dict[str, Any]:
    """Stage 2: score every record (seed: quality gates and perplexities, per data set)."""
    gate = json.loads((Path(model_checkpoint) / WEIGHTS_FILE).read_text())
    records = _read(data)
    counts = Counter(t for r in records for t in _tokens(_answer(r)))
    total, vocabulary = sum(counts.values()), len(counts)
    order = sorted(range(len(records)), key=lambda i: len(_answer(records[i])))
    if not sort_by_length:
        order = list(range(len(records)))
    batch_size = int(data_process.get("batch_size", 32))
    by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for start in range(0, len(order), batch_size):  # batches, as the real stage runs them
        for i in order[start : start + batch_size]:
            tokens = _tokens(_answer(records[i]))
            scores = [gate["tokens"].get(t, gate["unseen"]) for t in tokens]
            # Unigram perplexity with add-one smoothing over the whole data.
            logp = [math.log((counts[t] + 1) / (total + vocabulary)) for t in tokens]
            by_dataset[records[i].get("dataset", "data")].append(
                {
                    "id": records[i]["id"],
                    "quality_gate": sum(scores) / max(1, len(scores)),
                    "perplexity": math.exp(-sum(logp) / max(1, len(logp))),
                    "tokens": len(tokens),
                }
            )
    folder = Path(router_data)
    folder.mkdir(parents=True)
    for dataset, rows in sorted(by_dataset.items()):
        rows.sort(key=lambda row: str(row["id"]))
        with open(folder / f"{dataset}_router_data.jsonl", "w") as out:
            out.writelines(json.dumps(row) + "\n" for row in rows)
    print(
        f"selection: scored {len(records)} records in {math.ceil(len(records) / batch_size)} batches"
    )
    return {"records": len(records), "datasets": sorted(by_dataset)}


def batch_selection(
    data: str, router_data: str, selected_data: str, selection_percentage: float = 0.05
) -> dict[str, Any]:
    """Keep the top ``selection_percentage`` of all records by gate score (ties: lower
    perplexity first), as seed 001's scripts/batch_selection.py does over every data set."""
    scored = [
        json.loads(line)
        for path in sorted(Path(router_data).glob("*_router_data.jsonl"))
        for line in path.read_text().splitlines()
    ]
    ranked = sorted(scored, key=lambda r: (-r["quality_gate"], r["perplexity"], str(r["id"])))
    keep = {r["id"] for r in ranked[: math.ceil(len(ranked) * float(selection_percentage))]}
    folder = Path(selected_data)
    folder.mkdir(parents=True)
    kept = [r for r in _read(data) if r["id"] in keep]
    with open(folder / SELECTED_FILE, "w") as out:
        out.writelines(json.dumps(r) + "\n" for r in kept)
    summary = {
        "stand_in": STAND_IN,
        "selected": len(kept),
        "of": len(scored),
        "selection_percentage": selection_percentage,
        "per_dataset": dict(sorted(Counter(r.get("dataset") for r in kept).items())),
    }
    (folder / "selection.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"batch selection: kept {len(kept)} of {len(scored)} records")
    return summary


def finetune(
    selected_data: str, checkpoint: str, finetune: dict[str, Any], seed: int = 0
) -> dict[str, Any]:
    """Stage 3: what a LoRA finetune on the selected records would be (no weights)."""
    records = _read(str(Path(selected_data) / SELECTED_FILE))
    lora = finetune.get("lora", {})
    batch_size = int(finetune.get("batch_size", 64))
    epochs = int(finetune.get("epochs", 1))
    final = Path(checkpoint) / "checkpoint-final"
    final.mkdir(parents=True)
    adapter = {
        "base_model_name_or_path": finetune.get("model"),
        "peft_type": "LORA",
        "r": lora.get("r", 128),
        "lora_alpha": lora.get("lora_alpha", 256),
        "target_modules": [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
    }
    summary = {
        "stand_in": STAND_IN,
        "records": len(records),
        "tokens": sum(len(_tokens(_answer(r))) for r in records),
        "per_dataset": dict(sorted(Counter(r.get("dataset") for r in records).items())),
        "steps": math.ceil(len(records) / batch_size) * epochs,
        "seed": seed,
        "finetune": finetune,
    }
    (final / "adapter_config.json").write_text(json.dumps(adapter, indent=1) + "\n")
    (final / "training_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"finetune: would train {finetune.get('model')} on {len(records)} records")
    return {"records": len(records), "steps": summary["steps"]}


def _read(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _answer(record: dict[str, Any]) -> str:
    return " ".join(
        m.get("content", "") for m in record.get("messages", []) if m.get("role") == "assistant"
    )


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())
