"""``stagewise stage report``: a markdown account of a release repo's stages."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from stagewise.errors import StagewiseError
from stagewise.release.plan import plan_stage
from stagewise.release.repo import Release
from stagewise.release.switching import condition_text, parse_time, predict_next, timestamp


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours or days else []
    parts += [f"{minutes}m"] if minutes or hours or days else []
    return " ".join([*parts, f"{secs}s"])


def _table(header: list[str], rows: Iterable[Iterable[object]]) -> list[str]:
    def cell(value: object) -> str:
        return "-" if value is None or value == "" else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def render_report(release: Release) -> str:
    config = release.require_stage_config()
    active = release.read_active()
    lines = [f"# Stage report: {release.source.display}", "", f"Generated {timestamp()}.", ""]

    lines += ["## Current stage", ""]
    if active is None:
        lines += [f"No stage is active yet; training starts with `{config.initial_stage}`.", ""]
    else:
        lines += _table(
            ["stage", "variant", "activated at", "by", "reason"],
            [
                [
                    active.current_stage,
                    active.current_variant,
                    active.activated_at,
                    active.activated_by,
                    active.switch_reason,
                ]
            ],
        )

    lines += [
        "## Stages",
        "",
        f"Switching: `{config.switch_strategy.mode}`, checked every "
        f"{config.switch_strategy.check_interval} epoch(s).",
        "",
    ]
    rows = []
    for order, name in enumerate(config.ordered_stages(), 1):
        d = config.stages[name]
        files = d.config_file or ", ".join(
            f"{k}: {v.config_file} ({v.weight})" for k, v in (d.variants or {}).items()
        )
        when = "; ".join(condition_text(c.epoch, c.condition) for c in d.auto_switch_conditions)
        rows.append(
            [order, f"`{name}`", d.name, files, d.trigger_mode or "auto", when or "manual only"]
        )
    lines += _table(["#", "stage", "name", "config", "trigger", "switches in when"], rows)

    lines += ["## History", ""]
    history = active.history if active else []
    now = datetime.now()
    rows = []
    for i, h in enumerate(history, 1):
        duration = h.duration
        if duration is None and h.deactivated_at is None:
            started = parse_time(h.activated_at)
            duration = (now - started).total_seconds() if started else None
            shown = f"{format_duration(duration)} (active)"
        else:
            shown = format_duration(duration)
        rows.append(
            [
                i,
                h.stage,
                h.variant,
                h.activated_at,
                h.deactivated_at,
                shown,
                h.activated_by,
                h.reason,
            ]
        )
    lines += (
        _table(
            ["#", "stage", "variant", "activated", "deactivated", "duration", "by", "reason"], rows
        )
        if rows
        else ["No switches recorded yet."]
    )

    lines += ["## Next stage", ""]
    current = active.current_stage if active else config.initial_stage
    prediction = (active.next_stage if active and active.next_stage else None) or predict_next(
        config, current
    )
    if prediction is None or not prediction.predicted_stage:
        lines += [
            "No automatic switch is expected from here (manual mode, or no later stage with conditions).",
            "",
        ]
    else:
        lines += [
            f"- predicted stage: `{prediction.predicted_stage}`",
            f"- conditions: {', '.join(f'`{c}`' for c in prediction.conditions) or 'none'}",
            f"- estimated switch time: {prediction.estimated_switch_time or 'not yet known (no epochs observed)'}",
            "",
        ]

    lines += ["## Datasets per stage", ""]
    for name in config.ordered_stages():
        d = config.stages[name]
        variants = list((d.variants or {}).items()) or [(None, None)]
        for variant, _ in variants:
            title = f"### `{name}`" + (f" / `{variant}`" if variant else "")
            try:
                dataset_config, shown = release.load_dataset_config(
                    release.stage_config_file(name, variant)
                )
                plan = plan_stage(dataset_config, release.dataset_location)
            except StagewiseError as exc:
                lines += [title, "", f"Cannot be read: {exc.headline} ({exc.location or ''})", ""]
                continue
            lines += [
                title,
                "",
                f"Config: `{shown}`; weights from {plan.weighting}; expected samples "
                f"per epoch: {plan.total if plan.total is not None else 'unknown'}.",
                "",
            ]
            lines += _table(list(plan.COLUMNS), plan.rows())
    return "\n".join(lines)
