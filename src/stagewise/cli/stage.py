"""``stagewise stage ...``: seed 000's stage manager (status, list, switch, preview, ...)."""

from __future__ import annotations

import contextlib
import enum
import json
import os
import sys
from pathlib import Path

import typer

from stagewise.cli.output import console, print_json, render_problem, table
from stagewise.release import Release, open_release
from stagewise.release.events import read_events
from stagewise.release.plan import plan_stage
from stagewise.release.report import format_duration, render_report, report_data, stage_rows
from stagewise.release.switching import predict_next, rollback, switch
from stagewise.release.validation import validate_file, validate_release
from stagewise.store.atomic import atomic_write

app = typer.Typer(
    help="Inspect and switch the stages of a data release repo (seed 000's stage manager).",
    no_args_is_help=True,
)

RepoOption = typer.Option(
    None,
    "--repo",
    "-r",
    help="The release repo: a directory, its stage_config.yaml, or an s3:// / obs:// URL. "
    "Default: STAGE_CONFIG_PATH, else the working directory.",
)
RefOption = typer.Option(None, "--ref", help="Read the repo as it was at this git tag or commit.")
JsonOption = typer.Option(False, "--json", help="Print JSON instead of tables.")


class By(enum.StrEnum):
    user = "user"
    system = "system"
    scheduler = "scheduler"


ByOption = typer.Option(By.user, "--by", help="Who switches (recorded as activated_by).")


def _open(repo: str | None, ref: str | None = None) -> Release:
    return open_release(repo, ref)


# ------------------------------------------------------------------ read verbs


@app.command()
def status(
    repo: str | None = RepoOption, ref: str | None = RefOption, as_json: bool = JsonOption
) -> None:
    """Show the active stage and what a run started now would train on."""
    release = _open(repo, ref)
    active = release.read_active()
    resolution = release.resolve()
    config = release.stage_config
    prediction = None
    if config is not None:
        current = active.current_stage if active else config.initial_stage
        prediction = (active.next_stage if active else None) or predict_next(config, current)
    if as_json:
        print_json(
            {
                "repo": release.source.display,
                "active": active.to_data() if active else None,
                "resolution": resolution.to_dict(),
                "next_stage": prediction.to_data() if prediction else None,
            }
        )
        return
    console.print(f"repo: {release.source.display}")
    if active is not None:
        variant = f" / {active.current_variant}" if active.current_variant else ""
        console.print(
            f"active stage: [bold]{active.current_stage}{variant}[/bold] since "
            f"{active.activated_at} by {active.activated_by} ({active.switch_reason or 'no reason'})"
        )
    elif config is not None:
        console.print(f"active stage: none yet (training starts with {config.initial_stage})")
    else:
        console.print("no stages: this repo is a plain training_dataset.json")
    console.print(
        f"a run now trains on: [bold]{resolution.config_file}[/bold]  (rule: {resolution.rule}; "
        f"{resolution.reason})"
    )
    names = ", ".join(d.name for d in resolution.config.enabled_datasets)
    console.print(f"datasets: {names}")
    if prediction is not None and prediction.predicted_stage:
        when = (
            f", about {prediction.estimated_switch_time}"
            if prediction.estimated_switch_time
            else ""
        )
        console.print(
            f"next stage: {prediction.predicted_stage} when {' or '.join(prediction.conditions) or 'switched'}{when}"
        )


@app.command("list")
def list_stages(
    repo: str | None = RepoOption, ref: str | None = RefOption, as_json: bool = JsonOption
) -> None:
    """List the stages in training order, with their configs and switch conditions."""
    release = _open(repo, ref)
    rows = stage_rows(release)
    config = release.require_stage_config()
    if as_json:
        print_json({"default_stage": config.initial_stage, "stages": rows})
        return
    console.print(
        table(
            f"Stages of {release.source.display}",
            ["#", "stage", "name", "config", "trigger", "switches in when (any one)", ""],
            [
                [
                    r["order"],
                    r["stage"],
                    r["name"],
                    r["config_file"] or ", ".join(r["variants"] or {}),
                    r["trigger_mode"],
                    "; ".join(r["conditions"]) or "manual only",
                    "<- active" if r["active"] else "",
                ]
                for r in rows
            ],
        )
    )


app.command("list-stages", help="Same as 'list' (seed 000's name).")(list_stages)


@app.command()
def preview(
    stage: str = typer.Argument(..., help="The stage to preview."),
    variant: str | None = typer.Option(
        None, "--variant", help="For a stage with A/B variants: which one."
    ),
    count_remote: bool = typer.Option(
        False, "--count-remote", help="Also count samples in remote files."
    ),
    repo: str | None = RepoOption,
    ref: str | None = RefOption,
    as_json: bool = JsonOption,
) -> None:
    """Show a stage's datasets, weights, duplicates, caps and expected samples per epoch."""
    release = _open(repo, ref)
    definition = release.stage(stage)
    if definition.variants and variant is None:
        variant = next(iter(definition.variants))
    config, shown = release.load_dataset_config(release.stage_config_file(stage, variant))
    with console.status("counting samples...") if sys.stdout.isatty() else contextlib.nullcontext():
        plan = plan_stage(config, release.dataset_location, count_remote=count_remote)
    if as_json:
        print_json({"stage": stage, "variant": variant, "config_file": shown, **plan.to_dict()})
        return
    sc = config.stage_config
    title = f"{stage}" + (f" / {variant}" if variant else "") + f"  ({shown})"
    console.print(table(title, list(plan.COLUMNS), plan.rows()))
    total = plan.total if plan.total is not None else "unknown"
    console.print(
        f"weights from: {plan.weighting}; sampling: {sc.sampling_strategy or '-'}; "
        f"shuffle: {sc.shuffle if sc.shuffle is not None else '-'}; expected samples per epoch: {total}"
    )


FileArgument = typer.Argument(None, help="One file to check; default: the whole repo.")


@app.command()
def validate(
    file: Path | None = FileArgument,
    repo: str | None = RepoOption,
    ref: str | None = RefOption,
    as_json: bool = JsonOption,
) -> None:
    """Check the repo (or one file): schema, files, names, weights, references, conditions.
    Exits 1 when there are errors."""
    if file is not None and repo is None and not os.environ.get("STAGE_CONFIG_PATH"):
        repo = str(_repo_of(file))  # dataset paths in the file are relative to its repo
    release = _open(repo, ref)
    report = validate_file(release, str(file)) if file else validate_release(release)
    if as_json:
        print_json(report.to_dict())
    else:
        for problem in report.problems:
            render_problem(problem)
        verdict = "[red]invalid[/red]" if report.errors else "[green]valid[/green]"
        console.print(
            f"{verdict}: {len(report.files)} file(s) checked, {len(report.errors)} error(s), "
            f"{len(report.warnings)} warning(s)"
        )
    if report.errors:
        raise typer.Exit(1)


def _repo_of(file: Path) -> Path:
    """The nearest folder above ``file`` that holds a stage_config.yaml or a
    training_dataset.json (else the working directory)."""
    for folder in file.resolve().parents:
        if (folder / "stage_config.yaml").is_file() or (folder / "training_dataset.json").is_file():
            return folder
    return Path.cwd()


app.command("validate-config", help="Same as 'validate' (seed 000's name).")(validate)


@app.command()
def report(
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the markdown here (default: print it)."
    ),
    repo: str | None = RepoOption,
    ref: str | None = RefOption,
    as_json: bool = typer.Option(False, "--json", help="Print the report's content as JSON."),
) -> None:
    """Write a markdown report: stages, current stage, history with durations, next stage,
    and each stage's datasets."""
    data = report_data(_open(repo, ref))
    if as_json:
        print_json(data)
        return
    text = render_report(data)
    if output is None:
        sys.stdout.write(text + "\n")
        return
    atomic_write(output, text + "\n")
    console.print(f"report written to {output}")


@app.command()
def events(
    last: int | None = typer.Option(None, "--last", "-n", min=1, help="Only the last N events."),
    repo: str | None = RepoOption,
    ref: str | None = RefOption,
    as_json: bool = JsonOption,
) -> None:
    """Show the stage_switch events of stage_events.jsonl (seed 000's log shape)."""
    log = read_events(_open(repo, ref))
    shown = log.events[-last:] if last else log.events
    if as_json:
        print_json([event.to_data() for event in shown])
        return
    console.print(
        table(
            "Stage switch events",
            ["time", "from", "to", "trigger", "condition", "by", "reason", "metadata"],
            [
                [
                    e.timestamp,
                    e.from_stage,
                    e.to_stage + (f" / {e.variant}" if e.variant else ""),
                    e.trigger,
                    e.condition,
                    e.activated_by,
                    e.reason,
                    json.dumps(e.metadata) if e.metadata else None,
                ]
                for e in shown
            ],
        )
    )
    for problem in log.skipped:
        render_problem(problem)


@app.command()
def history(
    repo: str | None = RepoOption, ref: str | None = RefOption, as_json: bool = JsonOption
) -> None:
    """Show every stage activation with its duration, who made it and why."""
    active = _open(repo, ref).read_active()
    entries = active.history if active else []
    if as_json:
        print_json([e.to_data() for e in entries])
        return
    console.print(
        table(
            "Stage history",
            ["#", "stage", "variant", "activated", "deactivated", "duration", "by", "reason"],
            [
                [
                    i,
                    e.stage,
                    e.variant,
                    e.activated_at,
                    e.deactivated_at,
                    format_duration(e.duration) if e.deactivated_at else "(active)",
                    e.activated_by,
                    e.reason,
                ]
                for i, e in enumerate(entries, 1)
            ],
        )
    )


# ------------------------------------------------------------------ write verbs


def _switch(
    stage: str,
    reason: str | None,
    by: By,
    variant: str | None,
    run_id: str | None,
    repo: str | None,
) -> None:
    reason = _as_text(reason)
    result = switch(_open(repo), stage, reason=reason, by=by.value, variant=variant, run_id=run_id)
    variant_text = f" (variant {result.variant})" if result.variant else ""
    if result.from_stage == result.to_stage:
        console.print(f"{stage}{variant_text} was already active; re-activated and recorded")
    else:
        console.print(
            f"switched {result.from_stage or '(none)'} -> [bold]{stage}[/bold]{variant_text}"
            + (f": {reason}" if reason else "")
        )


def _as_text(value: str | None) -> str | None:
    """Arguments that are not valid UTF-8 reach Python as surrogates; keep them readable."""
    if value is None:
        return None
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


VariantOption = typer.Option(
    None,
    "--variant",
    help="For a stage with A/B variants: which one (default: "
    "AB_VARIANT, else chosen by weight from --run-id).",
)
RunIdOption = typer.Option(None, "--run-id", help="Run id that picks an A/B variant by weight.")


@app.command("switch")
def switch_command(
    stage: str = typer.Argument(..., help="The stage to activate."),
    reason: str | None = typer.Option(
        None, "--reason", help="Why (kept in the history and the event log)."
    ),
    by: By = ByOption,
    variant: str | None = VariantOption,
    run_id: str | None = RunIdOption,
    repo: str | None = RepoOption,
) -> None:
    """Activate a stage: records a history entry and a stage_switch event."""
    _switch(stage, reason, by, variant, run_id, repo)


app.command("switch-stage", help="Same as 'switch' (seed 000's name).")(switch_command)


@app.command()
def activate(
    stage: str = typer.Argument(..., help="The stage to activate."),
    reason: str = typer.Option(..., "--reason", help="Why (required)."),
    by: By = ByOption,
    variant: str | None = VariantOption,
    run_id: str | None = RunIdOption,
    repo: str | None = RepoOption,
) -> None:
    """Activate a stage with a stated reason (seed 000's manual activation)."""
    _switch(stage, reason, by, variant, run_id, repo)


@app.command("rollback")
def rollback_command(
    reason: str | None = typer.Option(
        None, "--reason", help="Why (default: 'rollback from <stage>')."
    ),
    by: By = ByOption,
    repo: str | None = RepoOption,
) -> None:
    """Go back to the stage active before the current one (recorded as a switch)."""
    result = rollback(_open(repo), reason=_as_text(reason), by=by.value)
    console.print(f"rolled back {result.from_stage} -> [bold]{result.to_stage}[/bold]")
