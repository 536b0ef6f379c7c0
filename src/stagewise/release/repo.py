"""Opening a data release repo and resolving which dataset config a run trains on.

Resolution follows seed 000's order, first match wins:

1. ``FORCE_DATASET_CONFIG``: that file (relative to the working directory, else the repo);
2. ``TRAINING_STAGE=<stage>`` (with ``AB_VARIANT`` for a stage with variants);
3. the active stage in ``active_stage.yaml`` (also what ``TRAINING_STAGE=auto`` follows);
4. the default ``training_dataset.json``; with ``TRAINING_STAGE=auto`` and no active stage,
   the ``default_stage`` of stage_config.yaml.

A repo with no stage files resolves exactly like a plain ``training_dataset.json``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

from stagewise.config import (
    ActiveStage,
    DatasetConfig,
    Document,
    StageConfig,
    StageDefinition,
    load_model,
    parse_document,
)
from stagewise.config.base import FormatModel, suggest
from stagewise.errors import ConfigError, ReadOnlyReleaseError, StageError, StageNotFoundError
from stagewise.release import checks
from stagewise.release.sources import ReleaseSource, home_dir, make_source
from stagewise.release.variants import check_variant, choose_variant
from stagewise.store import locations

STAGE_CONFIG = "stage_config.yaml"
ACTIVE_STAGE = "active_stage.yaml"
DEFAULT_CONFIG = "training_dataset.json"
EVENT_LOG = "stage_events.jsonl"
LOCK_FILE = ".stagewise.lock"

Rule = Literal["FORCE_DATASET_CONFIG", "TRAINING_STAGE", "active_stage", "default_stage", "default"]


@dataclass(frozen=True)
class Resolution:
    """The dataset config a run trains on, and why."""

    config: DatasetConfig
    config_file: str
    rule: Rule
    stage: str | None
    variant: str | None
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "stage": self.stage,
            "variant": self.variant,
            "config_file": self.config_file,
            "reason": self.reason,
            "datasets": [d.name for d in self.config.enabled_datasets],
        }


def open_release(
    path_or_url: str | os.PathLike[str] | None = None,
    ref: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> Release:
    """Open a release repo: a directory, its ``stage_config.yaml``, or an fsspec URL.

    With no argument, ``STAGE_CONFIG_PATH`` names the stage config (and so the repo);
    without that, the working directory is the repo. ``ref`` reads every file from a git
    tag or commit without a checkout.
    """
    env = os.environ if env is None else env
    target = (
        os.fspath(path_or_url) if path_or_url is not None else env.get("STAGE_CONFIG_PATH", ".")
    )
    config_name = STAGE_CONFIG
    if target.rstrip("/").endswith((".yaml", ".yml")):
        target, _, config_name = target.rstrip("/").rpartition("/")
        target = target or "."
    home = home_dir(env)
    return Release(make_source(target, ref, home), config_name, home=home)


class Release:
    def __init__(
        self,
        source: ReleaseSource,
        stage_config_name: str = STAGE_CONFIG,
        *,
        home: Path | None = None,
    ) -> None:
        self.source = source
        self.stage_config_name = stage_config_name
        self.home = home or home_dir()

    def __repr__(self) -> str:
        return f"Release({self.source.display!r})"

    @property
    def root(self) -> Path | None:
        """The local directory of the repo, or None for a remote repo."""
        return getattr(self.source, "root", None)

    # -------------------------------------------------------------- reading files

    def read_document(self, rel: str) -> Document | None:
        raw = self.source.read_bytes(rel)
        return None if raw is None else parse_document(raw, self.source.describe(rel))

    @cached_property
    def stage_config(self) -> StageConfig | None:
        """The parsed stage_config.yaml, or None when the repo has no stages."""
        doc = self.read_document(self.stage_config_name)
        if doc is None:
            return None
        config = load_model(StageConfig, doc, what="stage config")
        errors = [p for p in checks.stage_references(config, doc) if p.severity == "error"]
        if errors:
            raise ConfigError(
                f"{len(errors)} problem{'s' if len(errors) > 1 else ''} in this stage config",
                location=doc.source,
                problems=errors,
            )
        return config

    def require_stage_config(self) -> StageConfig:
        config = self.stage_config
        if config is None:
            raise StageError(
                f"the release repo has no {self.stage_config_name}",
                location=self.source.display,
                hint="create one with 'stagewise release init DIR', or point STAGE_CONFIG_PATH at it",
            )
        return config

    def read_active(self, *, check_stage: bool = True) -> ActiveStage | None:
        """The parsed active_stage.yaml, or None when no stage has been activated. An active
        stage that stage_config.yaml no longer defines is an error, unless ``check_stage``
        is False (a switch away from it must still work)."""
        doc = self.read_document(ACTIVE_STAGE)
        if doc is None:
            return None
        active = load_model(ActiveStage, doc, what="active stage file")
        config = self.stage_config
        if check_stage and config is not None and active.current_stage not in config.stages:
            error = self._unknown_stage(
                active.current_stage, config, doc.source, doc.line_of(("current_stage",))
            )
            error.hint = f"{error.hint}; switch to a defined stage: stagewise stage switch STAGE"
            raise error
        return active

    def load_dataset_config(self, location: str) -> tuple[DatasetConfig, str]:
        """Load a dataset config by repo-relative path or URL; returns it and its display name."""
        if locations.is_url(location):
            from stagewise.release.sources import RemoteSource

            base, _, name = location.rpartition("/")
            source: ReleaseSource = RemoteSource(base, self.home)
            rel = name
        else:
            source, rel = self.source, location
        raw = source.read_bytes(rel)
        shown = source.describe(rel)
        if raw is None:
            raise ConfigError(
                "the dataset config file does not exist",
                location=shown,
                hint="check config_file in stage_config.yaml, or create the file "
                "(stagewise release generate)",
            )
        return _load_dataset_doc(parse_document(raw, shown)), shown

    def dataset_location(self, location: str) -> str:
        """A dataset's ``path``/``obs_path`` as an absolute path or URL."""
        return self.source.dataset_location(location)

    # -------------------------------------------------------------- stages

    def stage(self, name: str) -> StageDefinition:
        config = self.require_stage_config()
        if name not in config.stages:
            raise self._unknown_stage(
                name, config, self.source.describe(self.stage_config_name), None
            )
        return config.stages[name]

    def _unknown_stage(
        self, name: str, config: StageConfig, file: str, line: int | None
    ) -> StageNotFoundError:
        guess = suggest(name, list(config.stages))
        return StageNotFoundError(
            f"stage {name!r} is not defined in {self.stage_config_name}",
            location=f"{file}:{line}" if line else file,
            hint=(f"did you mean {guess!r}? " if guess else "")
            + f"known stages: {', '.join(config.stages)}",
        )

    def stage_config_file(self, stage: str, variant: str | None) -> str:
        definition = self.stage(stage)
        if definition.variants:
            if variant is None:
                raise StageError(
                    f"stage {stage!r} has A/B variants; one must be chosen",
                    hint=f"set AB_VARIANT to one of {', '.join(definition.variants)}, or give a "
                    "run id (--run-id, STAGEWISE_RUN_ID) to pick one by weight",
                )
            return definition.variants[
                check_variant(stage, definition.variants, variant)
            ].config_file
        if variant is not None:
            check_variant(stage, None, variant)
        return definition.config_file or ""

    def choose_variant(
        self,
        stage: str,
        *,
        explicit: str | None = None,
        env: Mapping[str, str] | None = None,
        run_id: str | None = None,
        active: ActiveStage | None = None,
    ) -> str | None:
        """The A/B variant ``stage`` runs with; None for a stage without variants.

        First of: the variant asked for; ``AB_VARIANT``; the active stage's
        ``current_variant`` when ``stage`` is the active stage; one picked by weight from the
        run id (``run_id`` or ``STAGEWISE_RUN_ID``). None when nothing decides.
        """
        variants = self.stage(stage).variants
        if not variants:
            if explicit is not None:
                check_variant(stage, None, explicit)
            return None
        env = os.environ if env is None else env
        asked = explicit or env.get("AB_VARIANT") or None
        if asked is not None:
            return check_variant(stage, variants, asked)
        if active is not None and active.current_stage == stage and active.current_variant:
            return check_variant(stage, variants, active.current_variant)
        run_id = run_id or env.get("STAGEWISE_RUN_ID") or None
        return choose_variant(stage, variants, run_id) if run_id else None

    def require_writable(self) -> Path:
        if not self.source.writable or self.root is None:
            raise ReadOnlyReleaseError(
                "this release repo is read-only (remote, or read at a git ref)",
                location=self.source.display,
                hint="switch stages in a local checkout of the repo",
            )
        return self.root

    # -------------------------------------------------------------- resolution

    def resolve(
        self, env: Mapping[str, str] | None = None, run_id: str | None = None
    ) -> Resolution:
        """The dataset config to train on under ``env`` (default: os.environ)."""
        env = os.environ if env is None else env
        stage_env = env.get("TRAINING_STAGE") or None
        forced = env.get("FORCE_DATASET_CONFIG")
        if forced:
            return self._resolve_forced(forced, stage_env)
        if stage_env and stage_env != "auto":
            active = self.read_active() if self.stage(stage_env).variants else None
            variant = self.choose_variant(stage_env, env=env, run_id=run_id, active=active)
            return self._resolve_stage(
                stage_env, variant, "TRAINING_STAGE", f"TRAINING_STAGE={stage_env}"
            )
        active = self.read_active()
        if active is not None:
            stage = active.current_stage
            variant = self.choose_variant(stage, env=env, run_id=run_id, active=active)
            why = f"active_stage.yaml: activated {active.activated_at or ''} ({active.switch_reason or 'no reason given'})"
            return self._resolve_stage(stage, variant, "active_stage", why)
        has_default = self.source.read_bytes(DEFAULT_CONFIG) is not None
        config = self.stage_config
        if config is not None and (stage_env == "auto" or not has_default):
            stage = config.initial_stage
            variant = self.choose_variant(stage, env=env, run_id=run_id)
            return self._resolve_stage(
                stage, variant, "default_stage", "no active stage yet: the default stage"
            )
        if not has_default:
            raise ConfigError(
                "this is not a release repo: it has neither stage_config.yaml nor training_dataset.json",
                location=self.source.display,
                hint="create one with 'stagewise release init DIR', or point --repo / STAGE_CONFIG_PATH at one",
            )
        dataset_config, shown = self.load_dataset_config(DEFAULT_CONFIG)
        return Resolution(
            dataset_config, shown, "default", None, None, "the default training_dataset.json"
        )

    def _resolve_stage(self, stage: str, variant: str | None, rule: Rule, why: str) -> Resolution:
        config_file = self.stage_config_file(stage, variant)
        dataset_config, shown = self.load_dataset_config(config_file)
        return Resolution(dataset_config, shown, rule, stage, variant, why)

    def _resolve_forced(self, forced: str, stage_env: str | None) -> Resolution:
        location = locations.local_path(forced)
        if locations.is_url(location):
            config, shown = self.load_dataset_config(location)
        else:
            config, shown = self._load_forced_file(Path(location), forced)
        stage = stage_env if stage_env and stage_env != "auto" else None
        stage = stage or (config.meta.stage if config.meta else None)
        return Resolution(
            config, shown, "FORCE_DATASET_CONFIG", stage, None, f"FORCE_DATASET_CONFIG={forced}"
        )

    def _load_forced_file(self, path: Path, forced: str) -> tuple[DatasetConfig, str]:
        """A forced config path is tried against the working directory, then the repo; in a
        repo read at a git ref, a relative path is read at that ref first."""
        relative = not path.is_absolute()
        if relative and not self.source.writable and self.source.read_bytes(str(path)) is not None:
            return self.load_dataset_config(str(path))
        tried = [path] if path.is_absolute() else [Path.cwd() / path]
        if not path.is_absolute() and self.source.writable and self.root is not None:
            tried.append(self.root / path)
        try:
            found = next((p for p in tried if p.is_file()), None)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ConfigError(
                f"FORCE_DATASET_CONFIG is not a usable path: {reason}", location=forced[:200]
            ) from None
        if found is not None:
            doc = parse_document(found.read_bytes(), str(found))
            return _load_dataset_doc(doc), str(found)
        if not path.is_absolute() and self.source.read_bytes(str(path)) is not None:
            return self.load_dataset_config(str(path))
        raise ConfigError(
            "FORCE_DATASET_CONFIG names a file that does not exist",
            location=forced[:200],
            hint=f"looked at {', '.join(str(p) for p in tried)}; fix the path or unset it",
        )


def _load_dataset_doc(doc: Document) -> DatasetConfig:
    """A dataset config a run can train on: its errors (every weight 0, no dataset enabled,
    a name used twice) stop here, with their lines, rather than deep inside a run."""
    config = load_model(DatasetConfig, doc, what="dataset config")
    found = checks.dataset_config_problems(config, doc, lambda _location: None)
    errors = [p for p in found if p.severity == "error"]
    if errors:
        raise ConfigError(
            f"{len(errors)} problem{'s' if len(errors) > 1 else ''} in this dataset config",
            location=doc.source,
            problems=errors,
        )
    return config


def save_model(path: Path, model: FormatModel, header: str | None = None) -> None:
    """Write a format model back to its file atomically, keeping its key order."""
    from stagewise.config import dump_json, dump_yaml
    from stagewise.store.atomic import atomic_write

    data = model.to_data()
    text = dump_json(data) if path.suffix == ".json" else dump_yaml(data, header)
    atomic_write(path, text)
