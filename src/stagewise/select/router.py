"""Stage 2, selection statistics: every record's per-token gates and perplexities.

For each dataset, ``router_data/<dataset>_router_data.pt`` holds seed 001's keys:
``quality_gates`` [N, L, T] (sigmoid gates, 0 on padding), ``perplexities`` [N, T],
``sample_ids``, ``dataset_name``, ``num_samples``, ``max_seq_len``, and ``metadata`` (the
run id that ties a run's files together, the model, the checkpoint, the data files).

Records are batched in descending order of their token count (``sort_by_length``: the
seed sorts by characters; tokens are what padding is made of) or in file order. Each finished batch is saved at once under ``.router_progress/``; a run
stopped part-way and started again on the same ``output_dir`` with the same inputs skips
the finished batches and ends with the same files as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stagewise.config.selection import ScoreConfig
from stagewise.errors import ConfigError, DataError
from stagewise.select import loop
from stagewise.select.encoding import collate, encode, pad_id
from stagewise.select.gate import (
    QualityGateForCausalLM,
    folder_digest,
    load_gate_weights,
    load_selector,
    merge_lora,
)
from stagewise.select.loop import FINAL
from stagewise.select.outputs import output_folder, record_config
from stagewise.select.records import expand, read_records, require_records, subset
from stagewise.select.scoring import token_perplexity
from stagewise.select.warmup import WEIGHTS_FILE
from stagewise.store.atomic import atomic_write

ROUTER_FOLDER = "router_data"
PROGRESS = ".router_progress"
SUFFIX = "_router_data.pt"


@dataclass(frozen=True)
class ScoreResult:
    output_dir: Path
    files: list[Path]
    batches_run: int


def score(
    config: ScoreConfig,
    overrides: Sequence[str] = (),
    echo: loop.Echo = print,
    on_batch: Callable[[int], None] | None = None,
) -> ScoreResult:
    data = config.dataset
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "the selection stage runs in one process; it was started under torchrun",
            hint="run 'stagewise select score CONFIG' without torchrun (device=cuda uses one GPU)",
        )
    device = loop.processes(config.device).device
    model, tokenizer = load_selector(
        config.selector_model.path, mode=config.selector_model.gate_mode
    )
    checkpoint = apply_checkpoint(model, config.model_checkpoint_path)
    model.to(device).eval()

    records = subset(read_records(data.data_path), data.subset_ratio, config.seed)
    require_records(records, "score")
    encoded = [encode(r, tokenizer, data.max_seq_len) for r in records]
    order = list(range(len(records)))
    if data.sort_by_length:
        order.sort(key=lambda i: (-len(encoded[i].ids), i))
    size = config.data_process.batch_size
    batches = [order[s : s + size] for s in range(0, len(order), size)]

    out = output_folder(config, "selection", overrides)
    run_id = loop.fingerprint(
        "selection",
        [(r.dataset, r.id, r.messages) for r in records],
        checkpoint,
        folder_digest(config.selector_model.path),
        model.mode,
        size,
        data.sort_by_length,
        data.max_seq_len,
        config.precision,
    )
    progress = _progress_folder(out, run_id, len(batches))
    record_config(out, config)
    pad = pad_id(tokenizer)
    ran, began = 0, time.monotonic()
    echo(f"selection: {len(records)} records in {len(batches)} batches of {size}")
    for number, indices in enumerate(batches):
        done = progress / f"batch-{number:06d}.pt"
        if done.exists():
            continue
        batch = collate([encoded[i] for i in indices], pad)
        inputs = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad(), loop.autocast(config.precision, device):
            output = model(inputs["input_ids"], inputs["attention_mask"])
        mask = inputs["attention_mask"]
        ppl = token_perplexity(output.logits, inputs["input_ids"], mask).cpu()
        gates = (output.gates * mask.unsqueeze(1)).float().cpu()
        _save_atomic({"indices": indices, "gates": gates, "perplexities": ppl}, done)
        ran += 1
        if on_batch is not None:
            on_batch(number)
        if ran % 20 == 0 or number == len(batches) - 1:
            rate = ran / max(time.monotonic() - began, 1e-9)
            echo(f"  batch {number + 1}/{len(batches)} ({rate:.2f} batches/s)")

    files = _assemble(
        out, progress, records, len(batches), model.num_layers, run_id, config, checkpoint
    )
    shutil.rmtree(progress)
    echo(f"✅ selection done: {len(files)} router data file(s) in {out / ROUTER_FOLDER}")
    return ScoreResult(out, files, ran)


def apply_checkpoint(model: QualityGateForCausalLM, path: str | None) -> str | None:
    """Load the warmup's gates into ``model``; returns a digest of the weights used."""
    if not path:
        return None
    location = Path(path)
    if location.is_dir():
        if (location / WEIGHTS_FILE).is_file():
            location = location / WEIGHTS_FILE
        elif (location / FINAL / "adapter_config.json").is_file():
            location = location / FINAL
    if location.is_file():
        try:
            saved = torch.load(location, weights_only=True, map_location="cpu")
        except Exception as exc:  # torch raises many types for a file that is no checkpoint
            raise ConfigError(
                f"cannot read the warmup checkpoint: {exc}".splitlines()[0],
                location=str(location),
                hint="point model_checkpoint_path at the warmup's full_rank_weights.pt",
            ) from None
        weights = saved.get("model_state_dict") if isinstance(saved, dict) else None
        if not isinstance(weights, dict):
            raise ConfigError(
                "not a full_rank_weights.pt: no model_state_dict",
                location=str(location),
                hint="point model_checkpoint_path at the warmup's output folder",
            )
        load_gate_weights(model, weights, str(location))
        return hashlib.sha256(location.read_bytes()).hexdigest()
    if (location / "adapter_config.json").is_file():
        model.lm = merge_lora(model.lm, location)
        return hashlib.sha256((location / "adapter_model.safetensors").read_bytes()).hexdigest()
    raise ConfigError(
        "no warmup weights here (no full_rank_weights.pt, no LoRA adapter_config.json)",
        location=str(path),
        hint="point model_checkpoint_path at the warmup's output folder",
    )


def _progress_folder(out: Path, run_id: str, batches: int) -> Path:
    progress = out / PROGRESS
    manifest = progress / "manifest.json"
    if manifest.is_file():
        found = json.loads(manifest.read_text(encoding="utf-8"))
        if found.get("run_id") != run_id:
            raise ConfigError(
                "output_dir holds an unfinished selection of other inputs (model, "
                "checkpoint, data or batching differ)",
                location=str(progress),
                hint="use a new output_dir, or delete this folder to start over",
            )
        return progress
    progress.mkdir(parents=True, exist_ok=True)
    atomic_write(manifest, json.dumps({"run_id": run_id, "batches": batches}) + "\n")
    return progress


def _save_atomic(data: Any, path: Path) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "wb") as out:
        torch.save(data, out)
        out.flush()
        os.fsync(out.fileno())
    temp.replace(path)


def _load_batch(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, weights_only=True)  # type: ignore[no-any-return]
    except Exception as exc:  # torch raises many types for a damaged file
        path.unlink()
        raise DataError(
            f"a finished batch's file was damaged ({exc}); it is deleted now".splitlines()[0],
            location=str(path),
            hint="run the same command again: it recomputes that batch and keeps the others",
        ) from None


def _assemble(
    out: Path,
    progress: Path,
    records: Sequence[Any],
    batches: int,
    layers: int,
    run_id: str,
    config: ScoreConfig,
    checkpoint: str | None,
) -> list[Path]:
    gates: dict[int, torch.Tensor] = {}
    ppl: dict[int, torch.Tensor] = {}
    for number in range(batches):
        part = _load_batch(progress / f"batch-{number:06d}.pt")
        for row, index in enumerate(part["indices"]):
            length = int((part["perplexities"][row] > 0).sum())
            gates[index] = part["gates"][row, :, :length]
            ppl[index] = part["perplexities"][row, :length]
    # Written beside, then renamed: pick never sees a half-written router_data/.
    final = out / ROUTER_FOLDER
    folder = out / f".{ROUTER_FOLDER}.writing"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    by_dataset: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        by_dataset.setdefault(record.dataset, []).append(index)
    files = [str(p.resolve()) for p in expand(config.dataset.data_path)]
    written = []
    for name, indices in sorted(by_dataset.items()):
        width = max(ppl[i].numel() for i in indices)
        stacked_gates = torch.zeros(len(indices), layers, width)
        stacked_ppl = torch.zeros(len(indices), width)
        for row, index in enumerate(indices):
            n = ppl[index].numel()
            stacked_gates[row, :, :n] = gates[index]
            stacked_ppl[row, :n] = ppl[index]
        target = folder / f"{name}{SUFFIX}"
        _save_atomic(
            {
                "quality_gates": stacked_gates,
                "perplexities": stacked_ppl,
                "sample_ids": [records[i].id for i in indices],
                "dataset_name": name,
                "num_samples": len(indices),
                "max_seq_len": width,
                "metadata": {
                    "run_id": run_id,
                    "gates": "sigmoid (after), 0 on padding",
                    "selector_model": str(config.selector_model.path),
                    "model_checkpoint_path": config.model_checkpoint_path,
                    "checkpoint_sha256": checkpoint,
                    "num_layers": layers,
                    "data_files": files,
                },
            },
            target,
        )
        written.append(final / target.name)
    shutil.rmtree(final, ignore_errors=True)  # an earlier run's files on this output_dir
    folder.rename(final)
    return written
