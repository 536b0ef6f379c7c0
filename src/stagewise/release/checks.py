"""Checks of each release file, as findings with file, line, key and fix.

Errors stop a run; warnings are shown by ``stagewise stage validate`` and kept going.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

from stagewise.config import DatasetConfig, Document, FormatModel, StageConfig, format_key
from stagewise.config.active import ActiveStage
from stagewise.config.base import suggest
from stagewise.config.loading import KeyPath
from stagewise.errors import ConfigError, Problem, Severity
from stagewise.release import conditions
from stagewise.release.plan import category_of


def _at(
    doc: Document,
    path: KeyPath,
    message: str,
    hint: str | None = None,
    severity: Severity = "error",
) -> Problem:
    return Problem(
        message,
        file=doc.source,
        line=doc.line_of(path),
        key=format_key(path) or None,
        hint=hint,
        severity=severity,
    )


def unknown_keys(model: FormatModel, doc: Document) -> list[Problem]:
    found = []
    for path, known in model.unknown_keys():
        guess = suggest(str(path[-1]), known)
        found.append(
            _at(
                doc,
                path,
                f"unknown key {path[-1]!r} (kept as is)",
                f"did you mean {guess!r}?" if guess else None,
                "warning",
            )
        )
    return found


def stage_references(config: StageConfig, doc: Document) -> list[Problem]:
    """Cross-references inside stage_config.yaml: stage names, conditions, variants."""
    found: list[Problem] = []
    names = list(config.stages)
    for key in ("default_stage",):
        value = getattr(config, key)
        if value is not None and value not in config.stages:
            found.append(_unknown(doc, (key,), value, names))
    fallback = config.switch_strategy.fallback_stage
    if fallback is not None and fallback not in config.stages:
        found.append(_unknown(doc, ("switch_strategy", "fallback_stage"), fallback, names))
    named: dict[str, conditions.Node] = {}
    try:
        named = conditions.compile_named(config.conditions or {})
    except ConfigError as exc:
        name = (exc.location or "").removeprefix("conditions.")
        found.append(_at(doc, ("conditions", name), exc.headline, exc.hint))
    interval = config.switch_strategy.check_interval
    for stage, definition in config.stages.items():
        for i, entry in enumerate(definition.auto_switch_conditions):
            path = ("stages", stage, "auto_switch_conditions", i)
            if entry.condition:
                found += _condition_problems(
                    doc,
                    (*path, "condition"),
                    entry.condition,
                    named,
                    has_epoch=entry.epoch is not None,
                )
            if entry.epoch and entry.epoch % interval:
                checked = math.ceil(entry.epoch / interval) * interval
                found.append(
                    _at(
                        doc,
                        (*path, "epoch"),
                        f"epoch {entry.epoch} is not a multiple of check_interval {interval}: "
                        f"the switch happens at epoch {checked}",
                        "make the epoch a multiple of check_interval",
                        "warning",
                    )
                )
        if definition.variants and sum(v.weight for v in definition.variants.values()) <= 0:
            found.append(
                _at(
                    doc,
                    ("stages", stage, "variants"),
                    "every variant has weight 0",
                    "give at least one variant a weight above 0",
                )
            )
    priorities = Counter(d.priority for d in config.stages.values() if d.priority is not None)
    for stage, definition in config.stages.items():
        if definition.priority is not None and priorities[definition.priority] > 1:
            found.append(
                _at(
                    doc,
                    ("stages", stage, "priority"),
                    f"priority {definition.priority} is shared with another stage; "
                    "their order falls back to the order in the file",
                    None,
                    "warning",
                )
            )
    return found


def _unknown(doc: Document, path: KeyPath, value: str, names: list[str]) -> Problem:
    guess = suggest(value, names)
    return _at(
        doc,
        path,
        f"stage {value!r} is not defined under 'stages'",
        (f"did you mean {guess!r}? " if guess else "") + f"known stages: {', '.join(names)}",
    )


def _condition_problems(
    doc: Document, path: KeyPath, text: str, named: dict[str, conditions.Node], *, has_epoch: bool
) -> list[Problem]:
    try:
        node = conditions.parse(text)
    except ConfigError as exc:
        return [_at(doc, path, exc.headline, exc.hint)]
    found = []
    for flag in sorted(conditions.flags(node) - set(named) - conditions.BUILTIN_LABELS):
        guess = suggest(flag, list(named))
        if guess:
            holds = "holds once the epoch is reached" if has_epoch else "holds only when reported"
            found.append(
                _at(
                    doc,
                    path,
                    f"{flag!r} is not a defined condition, so it {holds}",
                    f"did you mean {guess!r}?",
                    "warning",
                )
            )
        elif not has_epoch:
            found.append(
                _at(
                    doc,
                    path,
                    f"{flag!r} is a label with no epoch: it holds only when the training loop "
                    f"reports a metric {flag!r} that is true",
                    f"add 'epoch: N' to the entry, or define {flag!r} under 'conditions:'",
                    "warning",
                )
            )
    return found


def dataset_config_problems(
    config: DatasetConfig, doc: Document, exists: Callable[[str], bool | None]
) -> list[Problem]:
    """Names, files and weights of one dataset config. ``exists`` answers None when a
    location cannot be checked from here (remote)."""
    found = unknown_keys(config, doc)
    counts = Counter(d.name for d in config.dataset_index)
    for i, entry in enumerate(config.dataset_index):
        path = ("dataset_index", i)
        if counts[entry.name] > 1:
            found.append(
                _at(
                    doc,
                    (*path, "name"),
                    f"dataset name {entry.name!r} is used more than once",
                    "give each dataset a unique name",
                )
            )
        if entry.enabled and exists(entry.location) is False:
            key = "path" if entry.path else "obs_path"
            found.append(
                _at(
                    doc,
                    (*path, key),
                    f"the dataset file does not exist: {entry.location}",
                    "fix the path (relative paths are relative to the repo), or set enabled: false",
                )
            )
        if entry.enabled and entry.duplicate == 0:
            found.append(
                _at(
                    doc,
                    (*path, "duplicate"),
                    "duplicate is 0: the dataset contributes nothing",
                    "set enabled: false to leave it out, or duplicate >= 1",
                    "warning",
                )
            )
    enabled = config.enabled_datasets
    if not enabled:
        found.append(
            _at(
                doc,
                ("dataset_index",),
                "no dataset is enabled: there is nothing to train on",
                "enable at least one dataset",
            )
        )
    found += _weight_problems(config, doc)
    return found


def _weight_problems(config: DatasetConfig, doc: Document) -> list[Problem]:
    found: list[Problem] = []
    enabled = config.enabled_datasets
    weighted = [d for d in enabled if d.stage_weight is not None]
    if weighted:
        total = sum(float(d.stage_weight or 0) for d in weighted)
        if total <= 0:
            found.append(
                _at(
                    doc,
                    ("dataset_index",),
                    "every stage_weight is 0",
                    "give a dataset a weight above 0",
                )
            )
        elif not math.isclose(total, 1.0, abs_tol=1e-6):
            found.append(
                _at(
                    doc,
                    ("dataset_index",),
                    f"stage_weight values sum to {total:g}; they are normalised to 1",
                    None,
                    "warning",
                )
            )
        for i, d in enumerate(config.dataset_index):
            if d.enabled and d.stage_weight is None:
                found.append(
                    _at(
                        doc,
                        ("dataset_index", i),
                        f"dataset {d.name!r} has no stage_weight while others do: it gets weight 0",
                        "give it a stage_weight",
                        "warning",
                    )
                )
    ratios = config.stage_config.data_ratio
    if ratios is None:
        return found
    path = ("meta", "stage_config", "data_ratio")
    total = sum(float(v) for v in ratios.values())
    if total <= 0:
        found.append(
            _at(doc, path, "every data_ratio value is 0", "give a category a share above 0")
        )
        return found
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        found.append(
            _at(
                doc,
                path,
                f"data_ratio values sum to {total:g}; they are normalised to 1",
                None,
                "warning",
            )
        )
    categories = {d.name: category_of(d.name, list(ratios)) for d in enabled}
    for key in ratios:
        if key not in categories.values():
            found.append(
                _at(
                    doc,
                    (*path, key),
                    f"data_ratio category {key!r} matches no enabled dataset: "
                    "its share is not used",
                    "name datasets '<category>_...' or remove the category",
                    "warning",
                )
            )
    for i, d in enumerate(config.dataset_index):
        if d.enabled and categories.get(d.name) is None and d.stage_weight is None:
            found.append(
                _at(
                    doc,
                    ("dataset_index", i, "name"),
                    f"dataset {d.name!r} matches no data_ratio category: it gets weight 0",
                    "add a category for it, or an 'others' category",
                    "warning",
                )
            )
    used = {c for c in categories.values() if c is not None}
    if not weighted and enabled and sum(float(ratios[c]) for c in used) <= 0:
        found.append(
            _at(
                doc,
                path,
                "every enabled dataset gets weight 0: none matches a data_ratio category "
                "with a share above 0",
                "name datasets '<category>_...', add an 'others' category, or set stage_weight",
            )
        )
    weight_total = sum(float(d.stage_weight or 0) for d in weighted)
    if weight_total > 0:
        by_category: dict[str, float] = {}
        for d in weighted:
            category = categories.get(d.name)
            if category is not None:
                by_category[category] = by_category.get(category, 0.0) + float(d.stage_weight or 0)
        for category, weight in by_category.items():
            share = float(ratios[category]) / total
            if not math.isclose(weight / weight_total, share, abs_tol=0.01):
                found.append(
                    _at(
                        doc,
                        (*path, category),
                        f"data_ratio gives {category!r} {share:.0%} but its datasets' "
                        f"stage_weight gives {weight / weight_total:.0%}; stage_weight wins",
                        None,
                        "warning",
                    )
                )
    return found


def active_problems(
    active: ActiveStage, config: StageConfig | None, doc: Document
) -> list[Problem]:
    found = unknown_keys(active, doc)
    if config is None:
        return found
    names = list(config.stages)
    if active.current_stage not in config.stages:
        found.append(_unknown(doc, ("current_stage",), active.current_stage, names))
        return found
    variants = config.stages[active.current_stage].variants
    if variants and active.current_variant is None:
        found.append(
            _at(
                doc,
                ("current_variant",),
                f"stage {active.current_stage!r} has A/B variants but no current_variant: a run needs "
                "AB_VARIANT or a run id to choose one",
                f"switch again with --variant ({', '.join(variants)})",
                "warning",
            )
        )
    if active.current_variant is not None and (
        not variants or active.current_variant not in variants
    ):
        found.append(
            _at(
                doc,
                ("current_variant",),
                f"stage {active.current_stage!r} has no variant {active.current_variant!r}",
                f"known: {', '.join(variants or {}) or 'none'}",
            )
        )
    for i, entry in enumerate(active.history):
        if entry.stage not in config.stages:
            found.append(
                _at(
                    doc,
                    ("history", i, "stage"),
                    f"history names stage {entry.stage!r}, which is no longer defined",
                    None,
                    "warning",
                )
            )
    return found
