"""`stagewise train` and `stagewise eval` as a user runs them: errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.train.conftest import config_data, write_config, write_jsonl


def stagewise(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stagewise", *args], capture_output=True, text=True, check=False
    )


def test_a_label_out_of_range_stops_before_training_with_file_and_line(
    tmp_path: Path, data_files: dict[str, list[str]]
) -> None:
    bad = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"features": [5.1, 3.5, 1.4, 0.2], "label": 0, "dataset_name": "iris"},
            {"features": [5.1, 3.5, 1.4, 0.2], "label": 1001, "dataset_name": "iris"},
        ],
    )
    raw = config_data({"train": [str(bad)], "val": []}, tmp_path / "out")
    result = stagewise("train", str(write_config(tmp_path / "c.yaml", raw)))
    assert result.returncode == 2
    assert f"{bad}:2" in result.stderr and "label 1001 is out of range" in result.stderr
    assert "Traceback" not in result.stderr and "out of bounds" not in result.stderr
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_bad_configs_are_one_clear_error_each(
    tmp_path: Path, data_files: dict[str, list[str]]
) -> None:
    raw = config_data(data_files, tmp_path / "out")
    raw["model"]["num_labels"] = 2  # wine and iris have 3 classes
    result = stagewise("train", str(write_config(tmp_path / "c.yaml", raw)))
    assert result.returncode == 2 and "raise model.num_labels to at least 3" in result.stderr
    assert "Traceback" not in result.stderr
    missing = stagewise("train", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "cannot read the training config" in missing.stderr
    raw = config_data(data_files, tmp_path / "out")
    raw["model"]["name"] = "resnet"
    result = stagewise("train", str(write_config(tmp_path / "c.yaml", raw)))
    assert result.returncode == 2 and "unknown model 'resnet'" in result.stderr


def test_train_then_eval_the_best_model(tmp_path: Path, data_files: dict[str, list[str]]) -> None:
    config = write_config(tmp_path / "c.yaml", config_data(data_files, tmp_path / "out", epochs=1))
    trained = stagewise("train", str(config), "training.lr=5e-3", "--json")
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    assert summary["steps"] > 0 and summary["best"]["metric"] == "overall_accuracy"
    evaluated = stagewise("eval", str(tmp_path / "out" / "best_model"), str(config), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert metrics["final_eval_overall_samples"] == 38 + 45
    assert metrics == summary["final"]
    help_text = stagewise("train", "--help").stdout
    assert "OVERRIDES" in help_text and "--no-resume" in help_text
