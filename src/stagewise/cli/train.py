"""``stagewise train CONFIG [OVERRIDES]`` and ``stagewise eval CHECKPOINT CONFIG``.

The config is seed 003's multi-dataset YAML (see docs/formats/training.md). Overrides use
Hydra's grammar: ``training.lr=3e-4``, ``training.epochs=3``, ``+wandb.enabled=true``.
The trainer (and torch) load when a command runs, not with the CLI.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import typer
from rich.markup import escape

from stagewise.cli.output import errors, print_json

OVERRIDES_HELP = (
    "Hydra-style overrides: training.lr=3e-4 sets a key, +key=value adds one, ~key removes one."
)


def _trainer():  # type: ignore[no-untyped-def]
    # Imported by name: the CLI stays light (no torch) until a training command runs.
    return importlib.import_module("stagewise.train.recipe")


def _load(config_file: Path, overrides: list[str] | None):  # type: ignore[no-untyped-def]
    from stagewise.config.training import load_training_config

    config, warnings = load_training_config(config_file, overrides or [])
    for warning in warnings:
        errors.print(f"[yellow]warning[/yellow] {escape(warning.render())}")
    return config


def train(
    config_file: Path = typer.Argument(..., metavar="CONFIG", help="The training config (YAML)."),
    overrides: list[str] | None = typer.Argument(None, metavar="OVERRIDES", help=OVERRIDES_HELP),
    no_resume: bool = typer.Option(
        False,
        "--no-resume",
        help="Start from scratch even when output_dir holds checkpoints of an earlier run "
        "(its files are moved to output_dir/previous-<time>/, nothing is deleted).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON at the end."),
    deepspeed_config: Path | None = typer.Option(
        None,
        "--deepspeed_config",
        "--deepspeed-config",
        help="A DeepSpeed JSON config, as in seed 003's command: sets training.strategy "
        "deepspeed (GPUs; untested here).",
    ),
) -> None:
    """Train on many datasets at once: per-dataset metrics, partial and full evaluation,
    best-model tracking, resumable checkpoints; with a release attached, its stages decide
    the data (TRAINING_STAGE=auto switches stages as training goes)."""
    if deepspeed_config is not None:
        overrides = [
            *(overrides or []),
            "training.strategy=deepspeed",
            f"training.deepspeed_config={json.dumps(str(deepspeed_config))}",
        ]
    config = _load(config_file, overrides)
    recipe = _trainer()
    result = recipe.train(config, resume=not no_resume, echo=_echo(as_json))
    summary = {
        "output_dir": str(result.output_dir),
        "steps": result.steps,
        "best": result.best,
        "final": result.final,
        "stages": result.stages,
    }
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for the run
        return
    if as_json:
        print_json(summary)
    else:
        typer.echo(f"✅ done: {result.steps} steps; outputs in {result.output_dir}")


def evaluate(
    checkpoint: Path = typer.Argument(
        ..., metavar="CHECKPOINT", help="A model folder: output_dir/best_model or a checkpoint."
    ),
    config_file: Path = typer.Argument(..., metavar="CONFIG", help="The training config (YAML)."),
    overrides: list[str] | None = typer.Argument(None, metavar="OVERRIDES", help=OVERRIDES_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Evaluate a saved model on the full evaluation data of CONFIG (every dataset, every
    sample), printed as seed 003's tables and logged as final_eval_* metrics."""
    config = _load(config_file, overrides)
    metrics = _trainer().evaluate_checkpoint(config, checkpoint, echo=_echo(as_json))
    if as_json:
        print_json(metrics)


def _echo(quiet: bool):  # type: ignore[no-untyped-def]
    if quiet:
        return lambda text: errors.print(escape(text))
    return lambda text: typer.echo(text)


__all__ = ["evaluate", "train"]
