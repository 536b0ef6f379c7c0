"""``stagewise stage validate``: check one file or a whole release repo.

Every finding names its file, line and key, and says how to fix it. Nothing stops at the
first problem: the whole repo is checked and everything is reported at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from stagewise.config import (
    ActiveStage,
    DatasetConfig,
    Document,
    StageConfig,
    format_key,
    load_model,
    parse_document,
)
from stagewise.config.base import FormatModel, M
from stagewise.config.loading import KeyPath
from stagewise.errors import ConfigError, Problem, StagewiseError
from stagewise.release.checks import (
    active_problems,
    dataset_config_problems,
    stage_references,
    unknown_keys,
)
from stagewise.release.repo import ACTIVE_STAGE, DEFAULT_CONFIG, Release
from stagewise.store import locations


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": not self.errors,
            "files": self.files,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "problems": [p.to_dict() for p in self.problems],
        }


def validate_release(release: Release) -> Report:
    report = Report()
    stage_doc = _read(release, release.stage_config_name, report)
    stage_config = _load(StageConfig, stage_doc, "stage config", report)
    referenced: set[str] = set()
    if stage_config is not None and stage_doc is not None:
        report.problems += unknown_keys(stage_config, stage_doc)
        report.problems += stage_references(stage_config, stage_doc)
        for name, definition in stage_config.stages.items():
            files = (
                [("config_file", definition.config_file)]
                if definition.config_file
                else [("variants", v.config_file) for v in (definition.variants or {}).values()]
            )
            for key, rel in files:
                referenced.add(os.path.normpath(rel or ""))
                _validate_dataset_file(release, rel or "", report, stage_doc, ("stages", name, key))
    default_doc = _read(release, DEFAULT_CONFIG, report)
    if default_doc is not None:
        _validate_dataset_doc(release, default_doc, report)
    elif stage_doc is None:
        report.problems.append(
            Problem(
                "this is not a release repo: it has neither stage_config.yaml nor training_dataset.json",
                file=release.source.display,
                hint="create one with 'stagewise release init DIR'",
            )
        )
    active_doc = _read(release, ACTIVE_STAGE, report)
    active = _load(ActiveStage, active_doc, "active stage file", report)
    if active is not None and active_doc is not None:
        report.problems += active_problems(active, stage_config, active_doc)
    _unreferenced_stage_files(release, referenced, report)
    return report


def validate_file(release: Release, path: str) -> Report:
    """Validate one file, recognised by its name: stage config, active stage or dataset config."""
    report = Report()
    local = Path(path)
    shown = str(local)
    try:
        raw = local.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", location=shown) from None
    report.files.append(shown)
    try:
        doc = parse_document(raw, shown)
    except StagewiseError as exc:
        report.problems.append(_as_problem(exc, shown))
        return report
    if local.name == ACTIVE_STAGE:
        active = _load(ActiveStage, doc, "active stage file", report)
        if active is not None:
            report.problems += active_problems(active, _quiet_stage_config(release), doc)
    elif local.suffix in (".yaml", ".yml"):
        config = _load(StageConfig, doc, "stage config", report)
        if config is not None:
            report.problems += unknown_keys(config, doc) + stage_references(config, doc)
    else:
        _validate_dataset_doc(release, doc, report)
    return report


def _quiet_stage_config(release: Release) -> StageConfig | None:
    try:
        return release.stage_config
    except StagewiseError:
        return None


def _read(release: Release, rel: str, report: Report) -> Document | None:
    try:
        doc = release.read_document(rel)
    except StagewiseError as exc:
        report.problems.append(_as_problem(exc, release.source.describe(rel)))
        return None
    if doc is not None:
        report.files.append(doc.source)
    return doc


def _load(model: type[M], doc: Document | None, what: str, report: Report) -> M | None:
    if doc is None:
        return None
    try:
        return load_model(model, doc, what=what)
    except ConfigError as exc:
        report.problems += exc.problems or [_as_problem(exc, doc.source)]
        return None


def _as_problem(exc: StagewiseError, file: str) -> Problem:
    location = exc.location or file
    path, _, line = location.rpartition(":")
    if not line.isdigit():  # no line number: the colon, if any, belongs to a URL
        path, line = location, ""
    return Problem(exc.headline, file=path or file, line=int(line) if line else None, hint=exc.hint)


def _validate_dataset_file(
    release: Release, rel: str, report: Report, parent: Document, key: KeyPath
) -> None:
    try:
        doc = release.read_document(rel) if not locations.is_url(rel) else None
    except StagewiseError as exc:
        report.problems.append(_as_problem(exc, rel))
        return
    if locations.is_url(rel):
        return  # a remote config is checked when it is resolved
    if doc is None:
        report.problems.append(
            Problem(
                f"config_file {rel!r} does not exist",
                file=parent.source,
                line=parent.line_of(key),
                key=format_key(key),
                hint="create it (stagewise release generate) or fix the path",
            )
        )
        return
    if doc.source not in report.files:
        report.files.append(doc.source)
        _validate_dataset_doc(release, doc, report)


def _validate_dataset_doc(release: Release, doc: Document, report: Report) -> None:
    config: FormatModel | None = _load(DatasetConfig, doc, "dataset config", report)
    if isinstance(config, DatasetConfig):
        report.problems += dataset_config_problems(config, doc, lambda loc: _exists(release, loc))


def _exists(release: Release, location: str) -> bool | None:
    where = release.dataset_location(location)
    if locations.is_url(where):
        return None
    return Path(where).exists()


def _unreferenced_stage_files(release: Release, referenced: set[str], report: Report) -> None:
    root = release.root
    if root is None or release.source.writable is False or not (root / "stages").is_dir():
        return
    for path in sorted((root / "stages").rglob("*.json")):
        rel = os.path.normpath(path.relative_to(root).as_posix())
        if rel not in referenced:
            report.problems.append(
                Problem(
                    "no stage in stage_config.yaml uses this file",
                    file=rel,
                    severity="warning",
                    hint="add a stage with this config_file, or delete the file",
                )
            )
