"""``stagewise release ...``: create a release repo, generate stage configs, tag, resolve."""

from __future__ import annotations

import subprocess
from pathlib import Path

import typer

from stagewise.cli.output import console, print_json
from stagewise.config import DatasetConfig, load_model, parse_document
from stagewise.errors import ConfigError, StageError
from stagewise.release import open_release
from stagewise.release.repo import STAGE_CONFIG
from stagewise.release.scaffold import (
    TEMPLATES,
    generate_from_base,
    generate_from_template,
    init_repo,
    load_template,
    parse_ratios,
    write_config,
)
from stagewise.release.tagging import tag_stage
from stagewise.release.validation import validate_release

app = typer.Typer(help="Create and maintain data release repos.", no_args_is_help=True)

RepoOption = typer.Option(
    None,
    "--repo",
    "-r",
    help="The release repo (default: STAGE_CONFIG_PATH, else the working directory).",
)


@app.command()
def init(
    directory: Path = typer.Argument(..., help="Where to create the repo (new or empty)."),
    no_data: bool = typer.Option(
        False, "--no-data", help="Leave out the small example datasets in data/."
    ),
    keep_existing: bool = typer.Option(
        False,
        "--keep-existing",
        help="Keep files that exist (e.g. your training_dataset.json) and write only the "
        "missing ones.",
    ),
) -> None:
    """Create a release repo with seed 000's layout: stage_config.yaml, active_stage.yaml,
    training_dataset.json, stages/ (pretraining, finetuning, evaluation, online_learning,
    ab_testing) and example datasets in data/."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the directory: {exc.strerror}", location=str(directory)
        ) from None
    written = init_repo(directory, with_data=not no_data, keep_existing=keep_existing)
    console.print(f"created a release repo in {directory} ({len(written)} files)")
    console.print(f"next: stagewise stage status --repo {directory}")


@app.command()
def generate(
    stage: str = typer.Option(..., "--stage", help="Name of the stage the config is for."),
    base_config: Path | None = typer.Option(
        None, "--base-config", help="Dataset config to start from."
    ),
    ratio: str | None = typer.Option(
        None, "--ratio", help="Category shares, e.g. highway:0.4,urban:0.3,parking:0.3."
    ),
    template: str | None = typer.Option(
        None,
        "--template",
        help=f"Template to start from: {', '.join(TEMPLATES)}, "
        "or templates/<name>_template.json in the repo.",
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Where to write (default: stages/<stage>.json)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace the output file if it exists."),
    repo: str | None = RepoOption,
) -> None:
    """Write a stage's dataset config, from a base config and ratios, or from a template."""
    if (base_config is None) == (template is None):
        raise ConfigError(
            "give either --base-config (with --ratio) or --template",
            hint="e.g. --base-config training_dataset.json --stage pretraining --ratio highway:0.6,urban:0.4",
        )
    root = open_release(repo).require_writable()
    target = output or (root / "stages" / f"{stage}.json")
    if base_config is not None:
        if ratio is None:
            raise ConfigError(
                "--base-config needs --ratio",
                location="--ratio",
                hint="e.g. --ratio highway:0.4,urban:0.3,parking:0.3",
            )
        base_path = (
            base_config
            if base_config.is_file() or base_config.is_absolute()
            else root / base_config
        )
        try:
            raw = base_path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the base config: {exc.strerror}", location=str(base_path)
            ) from None
        base = load_model(DatasetConfig, parse_document(raw, str(base_path)), what="dataset config")
        config, notes = generate_from_base(base, stage, parse_ratios(ratio))
    else:
        config, notes = generate_from_template(load_template(template or "", root), stage), []
    write_config(target, config, overwrite=force)
    for note in notes:
        console.print(f"[yellow]note[/yellow]: {note}")
    console.print(f"wrote {target}")
    stage_config = root / STAGE_CONFIG
    if stage_config.is_file() and f"\n  {stage}:" not in stage_config.read_text(
        encoding="utf-8", errors="replace"
    ):
        rel = target.relative_to(root) if target.is_relative_to(root) else target
        console.print(
            f"to use it, add to {stage_config} under 'stages:':\n"
            f'  {stage}:\n    config_file: "{rel}"'
        )


@app.command()
def tag(
    stage: str = typer.Argument(..., help="The stage whose config is released."),
    version: str = typer.Argument(..., help="Its version, e.g. v1.2.0."),
    message: str = typer.Option(..., "--message", "-m", help="The tag message."),
    force: bool = typer.Option(False, "--force", help="Tag even if validation finds errors."),
    repo: str | None = RepoOption,
) -> None:
    """Create the git tag stage/<stage>/<version> (seed 000's version management).
    The repo must validate and its stage files must be committed."""
    release = open_release(repo)
    root = release.require_writable()
    release.stage(stage)
    if not force and (errors := validate_release(release).errors):
        raise StageError(
            f"the repo has {len(errors)} validation error(s); not tagging",
            location=str(root),
            problems=errors,
            hint="fix them, or pass --force",
        )
    dirty = subprocess.run(
        [
            "git",
            "-C",
            str(root),
            "status",
            "--porcelain",
            "--",
            "stage_config.yaml",
            "stages",
            "training_dataset.json",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if dirty:
        raise StageError(
            "stage files have uncommitted changes; the tag would not include them",
            location=str(root),
            hint="commit them first:\n" + dirty,
        )
    name = tag_stage(root, stage, version, message)
    console.print(f"tagged {name}; read it later with --ref {name}")


@app.command()
def resolve(
    repo: str | None = RepoOption,
    ref: str | None = typer.Option(None, "--ref", help="Read the repo at this git tag or commit."),
    run_id: str | None = typer.Option(
        None, "--run-id", help="Run id that picks an A/B variant by weight."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show which dataset config a run started now would train on, and the rule that chose it
    (FORCE_DATASET_CONFIG, TRAINING_STAGE + AB_VARIANT, active_stage.yaml, training_dataset.json)."""
    resolution = open_release(repo, ref).resolve(run_id=run_id)
    if as_json:
        print_json(resolution.to_dict())
        return
    console.print(f"config: [bold]{resolution.config_file}[/bold]")
    console.print(f"rule: {resolution.rule} ({resolution.reason})")
    if resolution.stage:
        console.print(
            f"stage: {resolution.stage}"
            + (f" / {resolution.variant}" if resolution.variant else "")
        )
    console.print("datasets: " + ", ".join(d.name for d in resolution.config.enabled_datasets))
