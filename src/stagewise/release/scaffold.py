"""``stagewise release init`` and ``stagewise release generate``.

``init`` lays out seed 000's repo from the templates shipped in ``release/templates/``,
with small JSON-lines datasets under ``data/`` so that a new repo validates and previews
real counts. ``generate`` writes a stage config from a base config and category ratios,
or from a template (the seed's ``generate_stage_config.py``).
"""

from __future__ import annotations

import json
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from stagewise.config import (
    DatasetConfig,
    DatasetMeta,
    StageDataConfig,
    dump_json,
    load_model,
    parse_document,
)
from stagewise.errors import ConfigError
from stagewise.release.plan import ratio_weights
from stagewise.release.repo import ACTIVE_STAGE, STAGE_CONFIG
from stagewise.release.switching import timestamp
from stagewise.store.atomic import atomic_write

TEMPLATES = ("pretraining", "finetuning", "evaluation", "online_learning", "ab_testing")
_TEMPLATE_FILES = {
    "pretraining": "stages/pretraining.json",
    "finetuning": "stages/finetuning.json",
    "evaluation": "stages/evaluation.json",
    "online_learning": "stages/online_learning.json",
    "ab_testing": "stages/ab_testing/variant_a.json",
}
# Example datasets: name -> (number of records, scene label)
EXAMPLE_DATA = {
    "highway_foundation_large": (120, "highway"),
    "urban_scenarios_base": (80, "urban"),
    "parking_lots_base": (40, "parking"),
    "others_mixed_scenes": (20, "others"),
    "toll_station_scenarios_refined": (50, "toll_station"),
    "intersection_complex_cases": (40, "intersection"),
    "merge_lane_cases": (30, "merge_lane"),
    "eval_highway_benchmark": (25, "highway"),
    "eval_urban_benchmark": (25, "urban"),
    "online_recent_clips": (15, "online"),
}
GITIGNORE = ".stagewise.lock\n.*.tmp\n"


def _template_files() -> dict[str, str]:
    root = resources.files("stagewise.release") / "templates"
    found: dict[str, str] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            else:
                found[prefix + child.name] = child.read_text(encoding="utf-8")

    walk(root, "")
    return found


def init_repo(
    directory: Path, *, with_data: bool = True, keep_existing: bool = False
) -> list[Path]:
    """Create a release repo in ``directory``. Existing files are never overwritten: with
    ``keep_existing`` they are kept and only missing files are written (to add stages to a
    repo that has a training_dataset.json); otherwise they are an error."""
    if (directory / STAGE_CONFIG).exists():
        raise ConfigError(
            "a release repo already exists here",
            location=str(directory / STAGE_CONFIG),
            hint="choose another directory; nothing was changed",
        )
    created_at = timestamp()
    files = {
        name: text.replace("{created_at}", created_at) for name, text in _template_files().items()
    }
    files[".gitignore"] = GITIGNORE
    files[ACTIVE_STAGE] = _initial_active_stage(created_at)
    if with_data:
        files.update({f"data/{name}.jsonl": example_records(name) for name in EXAMPLE_DATA})
    existing = [rel for rel in files if (directory / rel).exists()]
    if existing and not keep_existing and existing != [".gitignore"]:
        raise ConfigError(
            f"{len(existing)} file(s) would be overwritten: {', '.join(existing[:5])}"
            + (" ..." if len(existing) > 5 else ""),
            location=str(directory),
            hint="choose an empty directory, or pass --keep-existing to write only the missing files",
        )
    written: list[Path] = []
    for rel, text in files.items():
        path = directory / rel
        if path.exists():
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the folder: {exc.strerror}", location=str(path.parent)
            ) from None
        atomic_write(path, text)
        written.append(path)
    return written


def _initial_active_stage(created_at: str) -> str:
    return (
        "# Written by stagewise: the active stage of this release repo and its history.\n"
        f"current_stage: pretraining\ncurrent_variant: null\nactivated_at: '{created_at}'\n"
        "activated_by: system\nswitch_reason: release_init\nhistory:\n- stage: pretraining\n"
        f"  activated_at: '{created_at}'\n  deactivated_at: null\n  duration: null\n"
        "  reason: release_init\n  activated_by: system\n"
    )


def example_records(name: str) -> str:
    count, scene = EXAMPLE_DATA[name]
    lines = [
        json.dumps(
            {
                "id": f"{name}-{i:04d}",
                "clip": f"clips/{scene}/{i:04d}.mp4",
                "scene": scene,
                "label": (i * 7 + len(name)) % 5,
            }
        )
        for i in range(count)
    ]
    return "\n".join(lines) + "\n"


def parse_ratios(text: str) -> dict[str, float]:
    """``highway:0.4,urban:0.3`` -> ``{"highway": 0.4, "urban": 0.3}``."""
    ratios: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition(":")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or not name.strip() or not number >= 0:
            raise ConfigError(
                f"cannot read the ratio {part!r}",
                location="--ratio",
                hint="write category:share pairs with shares >= 0, e.g. highway:0.4,urban:0.3,parking:0.3",
            )
        ratios[name.strip()] = number
    if not ratios or sum(ratios.values()) <= 0:
        raise ConfigError(
            "the ratios are empty or all 0",
            location="--ratio",
            hint="e.g. --ratio highway:0.4,urban:0.3,parking:0.3",
        )
    return ratios


def generate_from_base(
    base: DatasetConfig, stage: str, ratios: dict[str, float]
) -> tuple[DatasetConfig, list[str]]:
    """A stage config: the base's datasets, weighted by the category ratios. Returns the
    config and notes (datasets left out, categories with no dataset)."""
    weights, categories = ratio_weights([d.name for d in base.dataset_index], ratios)
    notes = [
        f"category {c!r} matches no dataset of the base config"
        for c in ratios
        if c not in categories.values()
    ]
    entries = []
    for d in base.dataset_index:
        entry = d.model_copy(deep=True)
        category = categories[d.name]
        if category is None:
            entry.enabled = False
            notes.append(f"dataset {d.name!r} matches no category: written with enabled: false")
        else:
            entry.stage_weight = round(weights[d.name], 6)
        entries.append(entry)
    meta = base.meta.model_copy(deep=True) if base.meta else DatasetMeta()
    meta.stage = stage
    meta.created_at = timestamp()
    meta.stage_config = (
        meta.stage_config.model_copy(deep=True) if meta.stage_config else StageDataConfig()
    )
    meta.stage_config.data_ratio = ratios
    return DatasetConfig(meta=meta, dataset_index=entries), notes


def load_template(name: str, repo: Path | None) -> DatasetConfig:
    """A template by name: ``templates/<name>_template.json`` in the repo, else a built-in one."""
    if repo is not None:
        custom = repo / "templates" / f"{name}_template.json"
        if custom.is_file():
            return load_model(
                DatasetConfig, parse_document(custom.read_bytes(), str(custom)), what="template"
            )
    if name not in _TEMPLATE_FILES:
        raise ConfigError(
            f"there is no template named {name!r}",
            location="--template",
            hint=f"built-in templates: {', '.join(TEMPLATES)}; or add templates/{name}_template.json to the repo",
        )
    text = _template_files()[_TEMPLATE_FILES[name]]
    return load_model(DatasetConfig, parse_document(text, f"template {name}.json"), what="template")


def generate_from_template(template: DatasetConfig, stage: str) -> DatasetConfig:
    config = template.model_copy(deep=True)
    meta = config.meta or DatasetMeta()
    meta.stage = stage
    meta.created_at = timestamp()
    meta.release_name = f"{stage}_{timestamp().split(' ')[0].replace('-', '')}"
    config.meta = meta
    return config


def write_config(path: Path, config: DatasetConfig, *, overwrite: bool = False) -> None:
    if path.exists() and not overwrite:
        raise ConfigError(
            "the output file exists already",
            location=str(path),
            hint="choose another --output, or pass --force to replace it",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, dump_json(config.to_data()))
