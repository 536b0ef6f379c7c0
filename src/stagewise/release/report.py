"""``stagewise stage report``: a markdown account of a release repo's stages."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from stagewise.errors import StagewiseError
from stagewise.release.plan import StagePlan, plan_stage
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


def stage_rows(release: Release) -> list[dict[str, Any]]:
    """The stages in training order, as plain data (for `stage list` and the report)."""
    config = release.require_stage_config()
    active = release.read_active()
    rows = []
    for order, name in enumerate(config.ordered_stages(), 1):
        d = config.stages[name]
        rows.append(
            {
                "order": order,
                "stage": name,
                "name": d.name,
                "active": active is not None and name == active.current_stage,
                "config_file": d.config_file,
                "variants": {
                    k: {"config_file": v.config_file, "weight": v.weight}
                    for k, v in (d.variants or {}).items()
                }
                or None,
                "trigger_mode": d.trigger_mode or "auto",
                "conditions": [
                    condition_text(c.epoch, c.condition) for c in d.auto_switch_conditions
                ],
                "description": d.description,
            }
        )
    return rows


def report_data(release: Release) -> dict[str, Any]:
    """Everything the report shows, as plain data (``stage report --json``)."""
    config = release.require_stage_config()
    active = release.read_active()
    current = active.current_stage if active else config.initial_stage
    prediction = (active.next_stage if active else None) or predict_next(config, current)
    now = datetime.now()
    history = []
    for entry in active.history if active else []:
        item = entry.to_data()
        started = parse_time(entry.activated_at)
        if entry.deactivated_at is None and started is not None:
            item["active_for"] = round((now - started).total_seconds())
        history.append(item)
    datasets = []
    for name in config.ordered_stages():
        for variant in list(config.stages[name].variants or {}) or [None]:
            item: dict[str, Any] = {"stage": name, "variant": variant}
            try:
                dataset_config, shown = release.load_dataset_config(
                    release.stage_config_file(name, variant)
                )
                item |= {
                    "config_file": shown,
                    **plan_stage(dataset_config, release.dataset_location).to_dict(),
                }
            except StagewiseError as exc:
                item["error"] = f"{exc.headline} ({exc.location or ''})"
            datasets.append(item)
    return {
        "repo": release.source.display,
        "generated_at": timestamp(now),
        "current": None
        if active is None
        else {
            "stage": active.current_stage,
            "variant": active.current_variant,
            "activated_at": active.activated_at,
            "activated_by": active.activated_by,
            "reason": active.switch_reason,
        },
        "initial_stage": config.initial_stage,
        "switch_strategy": config.switch_strategy.model_dump(),
        "stages": stage_rows(release),
        "history": history,
        "next_stage": prediction.to_data() if prediction and prediction.predicted_stage else None,
        "datasets": datasets,
    }


def render_report(data: dict[str, Any]) -> str:
    """The report as markdown, from :func:`report_data`."""
    lines = [
        f"# Stage report: {data['repo']}",
        "",
        f"Generated {data['generated_at']}.",
        "",
        "## Current stage",
        "",
    ]
    current = data["current"]
    if current is None:
        lines += [f"No stage is active yet; training starts with `{data['initial_stage']}`.", ""]
    else:
        lines += _table(
            ["stage", "variant", "activated at", "by", "reason"],
            [[current[k] for k in ("stage", "variant", "activated_at", "activated_by", "reason")]],
        )
    strategy = data["switch_strategy"]
    lines += [
        "## Stages",
        "",
        f"Switching: `{strategy['mode']}`, checked every {strategy['check_interval']} epoch(s).",
        "",
    ]
    lines += _table(
        ["#", "stage", "name", "config", "trigger", "switches in when (any one)"],
        [
            [
                r["order"],
                f"`{r['stage']}`",
                r["name"],
                r["config_file"]
                or ", ".join(
                    f"{k}: {v['config_file']} ({v['weight']})" for k, v in r["variants"].items()
                ),
                r["trigger_mode"],
                "; ".join(r["conditions"]) or "manual only",
            ]
            for r in data["stages"]
        ],
    )
    lines += ["## History", ""]
    rows = [
        [
            i,
            h["stage"],
            h.get("variant"),
            h.get("activated_at"),
            h.get("deactivated_at"),
            f"{format_duration(h['active_for'])} (active)"
            if "active_for" in h
            else format_duration(h.get("duration")),
            h.get("activated_by"),
            h.get("reason"),
        ]
        for i, h in enumerate(data["history"], 1)
    ]
    lines += (
        _table(
            ["#", "stage", "variant", "activated", "deactivated", "duration", "by", "reason"], rows
        )
        if rows
        else ["No switches recorded yet.", ""]
    )
    lines += ["## Next stage", ""]
    prediction = data["next_stage"]
    if prediction is None:
        lines += [
            "No automatic switch is expected from here (manual mode, or no later stage with conditions).",
            "",
        ]
    else:
        lines += [
            f"- predicted stage: `{prediction['predicted_stage']}`",
            f"- when any of: {', '.join(f'`{c}`' for c in prediction.get('conditions', [])) or 'none'}",
            f"- estimated switch time: {prediction.get('estimated_switch_time') or 'not yet known (no epochs observed)'}",
            "",
        ]
    lines += ["## Datasets per stage", ""]
    for item in data["datasets"]:
        title = f"### `{item['stage']}`" + (f" / `{item['variant']}`" if item["variant"] else "")
        if "error" in item:
            lines += [title, "", f"Cannot be read: {item['error']}", ""]
            continue
        total = item["total"] if item["total"] is not None else "unknown"
        lines += [
            title,
            "",
            f"Config: `{item['config_file']}`; weights from {item['weighting']}; "
            f"expected samples per epoch: {total}.",
            "",
        ]
        lines += _table(list(StagePlan.COLUMNS), StagePlan.rows_of(item["datasets"]))
    return "\n".join(lines)
