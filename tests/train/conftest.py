"""Small real datasets (scikit-learn's iris and wine) as seed 003 JSONL, and configs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

sklearn_datasets = pytest.importorskip("sklearn.datasets")


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def dataset_records(name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every 4th record is a test record (a fixed split, no randomness)."""
    load = {"iris": sklearn_datasets.load_iris, "wine": sklearn_datasets.load_wine}[name]
    features, labels = load(return_X_y=True)
    train, test = [], []
    for i, (row, label) in enumerate(zip(features, labels, strict=True)):
        record = {"id": i, "features": row.tolist(), "label": int(label), "dataset_name": name}
        (test if i % 4 == 0 else train).append(record)
    return train, test


@pytest.fixture(scope="session")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    root = tmp_path_factory.mktemp("data")
    train_files, val_files = [], []
    for name in ("iris", "wine"):
        train, test = dataset_records(name)
        train_files.append(str(write_jsonl(root / name / "train.jsonl", train)))
        val_files.append(str(write_jsonl(root / name / "test.jsonl", test)))
    return {"train": train_files, "val": val_files}


def config_data(data_files: dict[str, list[str]], output_dir: Path, **training: Any) -> dict:
    """Seed 003's config shape, at toy scale."""
    return {
        "model": {"pretrained_name": None, "num_labels": 3, "options": {"hidden": 32}},
        "datasets": {
            "dataset_configs": {
                "iris": {"num_classes": 3, "description": "iris", "eval_ratio": 0.5},
                "wine": {"num_classes": 3, "description": "wine", "eval_ratio": 1.0},
            },
            "enable_logits_masking": True,
            "shuffle_datasets": True,
        },
        "data": {"train_jsonl_list": data_files["train"], "val_jsonl_list": data_files["val"]},
        "training": {
            "epochs": 2,
            "lr": "1e-2",
            "output_dir": str(output_dir),
            "batch_size": 16,
            "log_every": 5,
            "best_model_tracking": {
                "enabled": True,
                "metric": "overall_accuracy",
                "mode": "max",
                "save_best_only": True,
            },
            "evaluation": {
                "partial_eval_during_training": True,
                "full_eval_at_end": True,
                "eval_best_model_only": True,
            },
            **training,
        },
        "wandb": {"enabled": False, "project": "test"},
    }


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
