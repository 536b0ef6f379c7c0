"""Seed 001's stages as pipeline task functions (``type: python``,
``function: stagewise.select.task:<name>``), each writing into its task's output folder.

    tiny_base  -> base_model      a tiny pretrained causal LM (no download), or skip it and
                                  pass a real model folder as the base_model input
    convert    base_model -> selector_model
    warmup     selector_model + config -> gates          (full_rank_weights.pt)
    score      selector_model + gates + config -> statistics   (router_data/)
    pick       statistics -> selection                   (selected_data.jsonl)
    finetune   base_model + selection + config -> adapters     (checkpoint-final/)

``config`` is the stage's YAML and ``overrides`` a list in Hydra's grammar; the wiring
(model paths, output_dir, model_checkpoint_path, dataset.data_path of the finetune) is
filled in from the inputs, so the configs stay the seed's. A task interrupted part-way
resumes from its checkpoints (warmup, finetune) or finished batches (score).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stagewise.config.selection import FinetuneConfig, ScoreConfig, WarmupConfig, load_stage_config

log = logging.getLogger("stagewise.select")


def _set(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"


def _load(model: Any, config: str, overrides: Sequence[str], wiring: list[str]) -> Any:
    loaded, warnings = load_stage_config(model, config, [*overrides, *wiring])
    for warning in warnings:
        log.warning("%s", warning.render())
    return loaded


def tiny_base(
    base_model: str, architecture: str = "qwen2", steps: int = 300, seed: int = 0
) -> dict[str, Any]:
    from stagewise.select.tiny import build_tiny_base

    build_tiny_base(Path(base_model), architecture=architecture, steps=steps, seed=seed)
    return {"architecture": architecture, "steps": steps}


def convert(
    base_model: str, selector_model: str, mode: str = "scale_ffn", seed: int = 42
) -> dict[str, Any]:
    from stagewise.select.gate import convert as convert_model

    convert_model(Path(base_model), Path(selector_model), mode=mode, seed=seed)
    return {"mode": mode}


def warmup(
    config: str, selector_model: str, gates: str, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    from stagewise.select.warmup import warmup as run_warmup

    wiring = [_set("selector_model.path", selector_model), _set("output_dir", gates)]
    result = run_warmup(_load(WarmupConfig, config, overrides, wiring))
    return {"weights": str(result.weights), **result.last}


def score(
    config: str, selector_model: str, gates: str, statistics: str, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    from stagewise.select.router import score as run_score

    wiring = [
        _set("selector_model.path", selector_model),
        _set("model_checkpoint_path", gates),
        _set("output_dir", statistics),
    ]
    result = run_score(_load(ScoreConfig, config, overrides, wiring))
    return {"files": [str(f) for f in result.files], "batches_run": result.batches_run}


def pick(
    statistics: str, selection: str, selection_percentage: float = 0.05, scope: str = "global"
) -> dict[str, Any]:
    from stagewise.select.batch_selection import pick as run_pick

    (found,) = run_pick(Path(statistics), selection_percentage, scope=scope, out=Path(selection))  # type: ignore[arg-type]
    return {"selected": found.selected, "total": found.total, "per_dataset": found.per_dataset}


def finetune(
    config: str, base_model: str, selection: str, adapters: str, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    from stagewise.select.batch_selection import SELECTED_FILE
    from stagewise.select.finetune import finetune as run_finetune

    wiring = [
        _set("training.model.name", base_model),
        _set("dataset.data_path", [str(Path(selection) / SELECTED_FILE)]),
        _set("output_dir", adapters),
    ]
    result = run_finetune(_load(FinetuneConfig, config, overrides, wiring))
    return {"final": str(result.final), "records": result.records, **result.last}
