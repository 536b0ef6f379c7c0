"""The trainer as pipeline tasks: ``type: training`` and ``type: evaluation`` with a
``config`` parameter (a training config file) run :func:`train_task` and
:func:`evaluate_task`.

- ``training``: its first output is the run's ``training.output_dir`` (checkpoints, the
  best model, metrics.jsonl, result.json); ``overrides`` (a list, Hydra's grammar) adjust
  the config, e.g. ``["training.epochs=3"]``.
- ``evaluation``: the full evaluation of the ``model`` input (a training output folder:
  its best_model is evaluated, or a model folder itself); the metrics go to the first
  output as ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stagewise.config.training import load_training_config
from stagewise.errors import PipelineError
from stagewise.train.checkpoint import MODEL_FILE

log = logging.getLogger("stagewise.train")


def _only_output(context: Mapping[str, Any] | None, task: str) -> str:
    outputs = dict((context or {}).get("outputs") or {})
    if len(outputs) != 1:
        raise PipelineError(
            f"a {task} task with a training config writes one output; it declares {len(outputs)}",
            hint="declare exactly one output (the training folder, or the metrics)",
        )
    return next(iter(outputs.values()))


def train_task(
    config: str,
    overrides: Sequence[str] = (),
    context: Mapping[str, Any] | None = None,
    **_inputs: Any,
) -> dict[str, Any]:
    from stagewise.train.recipe import train

    output = _only_output(context, "training")
    loaded, warnings = load_training_config(
        config, [*overrides, f"training.output_dir={json.dumps(output)}"]
    )
    for warning in warnings:
        log.warning("%s", warning.render())
    result = train(loaded, resume=True)
    return {"steps": result.steps, "best": result.best, "final": result.final}


def evaluate_task(
    config: str,
    model: str,
    overrides: Sequence[str] = (),
    context: Mapping[str, Any] | None = None,
    **_inputs: Any,
) -> dict[str, Any]:
    from stagewise.train.recipe import evaluate_checkpoint

    output = Path(_only_output(context, "evaluation"))
    folder = Path(model)
    if not (folder / MODEL_FILE).exists() and (folder / "best_model" / MODEL_FILE).exists():
        folder = folder / "best_model"
    loaded, _ = load_training_config(config, list(overrides))
    metrics = evaluate_checkpoint(loaded, folder)
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    return metrics
