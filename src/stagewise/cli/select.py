"""``stagewise select ...``: seed 001's three-stage data selection.

    stagewise select convert BASE OUT                       a Quality-Gate model from a base LM
    stagewise select warmup stage_1_warmup.yaml [OVERRIDES]  stage 1: train the gates
    stagewise select score stage_2_selection.yaml [OVERRIDES] stage 2: gates and perplexities
    stagewise select pick ROOT --percentage 0.05            the seed's batch_selection.py
    stagewise select finetune stage_3_finetune.yaml [OVERRIDES] stage 3: LoRA on the selection

The selection code (and torch) loads when a command runs, not with the CLI.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from stagewise.cli.output import console, errors, print_json, table

OVERRIDES_HELP = (
    "Hydra-style overrides, as in the seed's commands: training.learning_rate=3e-4, "
    "model_checkpoint_path=outputs/stage_1_warmup/..., dataset.data_path=[a.jsonl,b.jsonl]."
)

app = typer.Typer(
    help="Three-stage data selection (seed 001): convert a causal LM into a Quality-Gate "
    "model, warm up its gates, score every record, keep the best, LoRA-finetune on them.",
    no_args_is_help=True,
)


def _module(name: str) -> Any:
    return importlib.import_module(f"stagewise.select.{name}")


def _config(kind: str, config_file: Path, overrides: list[str] | None) -> Any:
    from stagewise.config import selection

    model = {
        "warmup": selection.WarmupConfig,
        "selection": selection.ScoreConfig,
        "finetune": selection.FinetuneConfig,
    }[kind]
    config, warnings = selection.load_stage_config(model, config_file, overrides or [])
    for warning in warnings:
        errors.print(f"[yellow]warning[/yellow] {escape(warning.render())}")
    return config


def _speaks() -> bool:
    return os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 speaks for the run


def _echo(quiet: bool) -> Any:
    if quiet:
        return lambda text: errors.print(escape(text))
    return lambda text: typer.echo(text)


@app.command("convert")
def convert(
    base: Path = typer.Argument(..., help="A Hugging Face causal LM folder (Qwen2, Qwen3, Llama)."),
    out: Path = typer.Argument(..., help="The Quality-Gate model folder to write (new or empty)."),
    mode: str = typer.Option(
        "scale_ffn",
        "--mode",
        help="scale_ffn: each layer's MLP output is multiplied by its gate; probe: the gate "
        "only reads (logits stay the base model's).",
    ),
    init_std: float = typer.Option(0.02, "--init-std", help="Gate weights start as N(0, std)."),
    seed: int = typer.Option(42, "--seed", help="Seeds the gates' initial weights."),
) -> None:
    """Add a quality gate (Linear(hidden, 1)) to every decoder layer of BASE and write OUT."""
    written = _module("gate").convert(base, out, mode=mode, init_std=init_std, seed=seed)
    typer.echo(f"✅ Quality-Gate model ({mode}) written to {written}")


@app.command("warmup")
def warmup(
    config_file: Path = typer.Argument(..., metavar="CONFIG", help="stage_1_warmup.yaml"),
    overrides: list[str] | None = typer.Argument(None, metavar="OVERRIDES", help=OVERRIDES_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON at the end."),
) -> None:
    """Stage 1: train the quality gates (CE + quality_loss_weight x quality loss); writes
    full_rank_weights.pt (or LoRA adapters) to a timestamped folder or output_dir. A
    folder holding this run's checkpoints is resumed."""
    config = _config("warmup", config_file, overrides)
    result = _module("warmup").warmup(config, overrides or [], echo=_echo(as_json))
    if as_json and _speaks():
        print_json(
            {"output_dir": str(result.output_dir), "weights": str(result.weights), **result.last}
        )


@app.command("score")
def score(
    config_file: Path = typer.Argument(..., metavar="CONFIG", help="stage_2_selection.yaml"),
    overrides: list[str] | None = typer.Argument(None, metavar="OVERRIDES", help=OVERRIDES_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON at the end."),
) -> None:
    """Stage 2: per-token gates and perplexities of every record, saved per dataset as
    router_data/<dataset>_router_data.pt. Stopped part-way, the same command on the same
    output_dir skips the finished batches."""
    config = _config("selection", config_file, overrides)
    result = _module("router").score(config, overrides or [], echo=_echo(as_json))
    if as_json and _speaks():
        print_json({"output_dir": str(result.output_dir), "files": [str(f) for f in result.files]})


@app.command("pick")
def pick(
    root: Path = typer.Argument(
        ..., metavar="ROOT", help="A selection output folder (or a folder above several)."
    ),
    percentage: float = typer.Option(
        0.05, "--percentage", "--selection_percentage", help="Share of records kept, in (0, 1]."
    ),
    scope: str = typer.Option(
        "global",
        "--scope",
        help="global: pool every dataset and keep the best of all (the reference); "
        "per_dataset: keep the share of each dataset.",
    ),
    alpha: float = typer.Option(1.0, "--alpha", help="Perplexity exponent of the token weights."),
    data: list[Path] | None = typer.Option(
        None, "--data", help="The scored JSONL files, when they moved since the selection stage."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """The seed's batch_selection: score every record from its router data and write the
    top share to selected_data.jsonl (with selection_config.yaml) in each experiment."""
    selections = _module("batch_selection").pick(
        root, percentage, scope=scope, alpha=alpha, data=[str(d) for d in data] if data else None
    )
    if as_json and _speaks():
        print_json(
            [
                {
                    "experiment": str(s.experiment),
                    "selected": s.selected,
                    "total": s.total,
                    "per_dataset": {
                        k: {"selected": a, "of": b} for k, (a, b) in s.per_dataset.items()
                    },
                }
                for s in selections
            ]
        )
        return
    for s in selections:
        typer.echo(
            f"{s.selected} of {s.total} records selected: {s.experiment / 'selected_data.jsonl'}"
        )
        rows = [[name, kept, of] for name, (kept, of) in s.per_dataset.items()]
        console.print(table(None, ["dataset", "selected", "of"], rows))


@app.command("finetune")
def finetune(
    config_file: Path = typer.Argument(..., metavar="CONFIG", help="stage_3_finetune.yaml"),
    overrides: list[str] | None = typer.Argument(None, metavar="OVERRIDES", help=OVERRIDES_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON at the end."),
) -> None:
    """Stage 3: LoRA-finetune a standard causal LM on selected_data.jsonl (dataset.mode
    subset) or on all the data (full); adapters in checkpoint-<step>/ and checkpoint-final/."""
    config = _config("finetune", config_file, overrides)
    result = _module("finetune").finetune(config, overrides or [], echo=_echo(as_json))
    if as_json and _speaks():
        print_json(
            {"output_dir": str(result.output_dir), "final": str(result.final), **result.last}
        )


@app.command("tiny-base")
def tiny_base(
    out: Path = typer.Argument(..., help="The model folder to write."),
    architecture: str = typer.Option("qwen2", "--architecture", help="qwen2, qwen3 or llama."),
    steps: int = typer.Option(300, "--steps", help="Pretraining steps on Python's docstrings."),
    seed: int = typer.Option(0, "--seed", help="Seeds the weights and the pretraining."),
) -> None:
    """A tiny causal LM (byte-level BPE tokenizer, a few layers) pretrained on the
    docstrings that ship with Python: to try the recipe on a CPU with no download."""
    _module("tiny").build_tiny_base(out, architecture=architecture, steps=steps, seed=seed)
    typer.echo(f"✅ tiny {architecture} model written to {out}")
