"""The training recipe on real (tiny) data: metrics, best model, full evaluation, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stagewise.config.training import load_training_config
from stagewise.train.checkpoint import MODEL_FILE, checkpoints
from stagewise.train.recipe import evaluate_checkpoint, train
from tests.train.conftest import config_data, write_config


def _run(tmp_path: Path, data_files: dict[str, list[str]], name: str, **training: object):  # type: ignore[no-untyped-def]
    raw = config_data(data_files, tmp_path / name, **training)
    config, _ = load_training_config(write_config(tmp_path / f"{name}.yaml", raw))
    lines: list[str] = []
    return train(config, resume=True, echo=lines.append), config, "\n".join(lines)


def test_training_reports_every_dataset_and_keeps_the_best_model(
    tmp_path: Path, data_files: dict[str, list[str]]
) -> None:
    result, config, printed = _run(tmp_path, data_files, "run", epochs=3)
    out = result.output_dir
    # The seed's tables and lines.
    assert "📊 多数据集加载统计 (训练模式):" in printed
    assert "📊 TRAIN - iris: Loss=" in printed and "📊 TRAIN - OVERALL: Acc=" in printed
    assert "📂 wine:" in printed and "🏆 发现更好模型! overall_accuracy:" in printed
    assert "🔍 开始对最佳模型进行完整评估" in printed
    # Partial evaluation used eval_ratio 0.5 of iris (38 test records -> 19), all of wine.
    assert "iris: 38 → 19 (50.0%) samples" in printed
    # The best model and the full evaluation of it, under the seed's names.
    assert (out / "best_model" / MODEL_FILE).exists()
    best = json.loads((out / "best_model" / "best.json").read_text())
    assert best["metric"] == "overall_accuracy" and best == result.best
    final = result.final
    assert final["final_eval_overall_samples"] == 38 + 45  # every test record
    assert final["final_eval_overall_accuracy"] > 0.8
    assert {"final_eval_iris_accuracy", "final_eval_wine_loss"} <= set(final)
    # Logged metrics, JSON lines: training, evaluation and best-model names.
    logged: dict[str, float] = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        logged |= json.loads(line).get("metrics", {})
    for name in (
        "train_iris_loss",
        "train_wine_accuracy",
        "train_overall_accuracy",
        "train_overall_samples",
        "eval_iris_loss",
        "eval_overall_accuracy",
        "eval_overall_samples",
        "best_model_step",
        "best_overall_accuracy",
        "final_eval_overall_accuracy",
    ):
        assert name in logged, name
    # `stagewise eval` of the best model gives the final evaluation again.
    again = evaluate_checkpoint(config, out / "best_model", echo=lambda _t: None)
    assert again["final_eval_overall_accuracy"] == pytest.approx(
        final["final_eval_overall_accuracy"]
    )


def test_a_run_killed_mid_epoch_resumes_to_the_same_result(
    tmp_path: Path, data_files: dict[str, list[str]]
) -> None:
    settings = {"epochs": 3, "checkpoint_every": 4, "keep_checkpoints": 50}
    whole, _, _ = _run(tmp_path, data_files, "whole", **settings)

    raw = config_data(data_files, tmp_path / "killed", **settings)
    path = write_config(tmp_path / "killed.yaml", raw)
    command = [sys.executable, "-m", "stagewise", "train", str(path)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 120
    while len(checkpoints(root)) < 2 and process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("no checkpoint appeared")
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    steps = json.loads((checkpoints(root)[-1] / "state.json").read_text())["step"]
    assert 0 < steps < whole.steps

    env = {**os.environ}
    resumed = subprocess.run(
        [*command, "--json"], capture_output=True, text=True, env=env, check=False
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["steps"] == whole.steps
    assert result["best"] == whole.best
    assert result["final"] == whole.final  # exactly: same order, same RNG, same sums


def test_every_kept_model_is_fully_evaluated_when_asked(
    tmp_path: Path, data_files: dict[str, list[str]]
) -> None:
    """Tracking a dataset's loss (mode min), keeping every evaluated model, and a full
    evaluation of each of them and of the final model."""
    result, _, printed = _run(
        tmp_path,
        data_files,
        "all",
        epochs=2,
        best_model_tracking={
            "enabled": True,
            "metric": "wine_loss",
            "mode": "min",
            "save_best_only": False,
        },
        evaluation={
            "partial_eval_during_training": True,
            "full_eval_at_end": True,
            "eval_best_model_only": False,
        },
    )
    kept = sorted(p.name for p in (result.output_dir / "models").iterdir())
    assert len(kept) == 2  # one per epoch's evaluation
    assert result.best is not None and result.best["metric"] == "wine_loss"
    assert "🏆 发现更好模型! wine_loss:" in printed
    for name in kept:
        assert f"eval_{name}_overall_accuracy" in result.final
    assert "eval_final_overall_accuracy" in result.final
    assert "final_eval_overall_accuracy" in result.final  # the best model's


def test_bf16_autocast_trains_on_the_cpu(tmp_path: Path, data_files: dict[str, list[str]]) -> None:
    result, _, _ = _run(tmp_path, data_files, "bf16", epochs=2, precision="bf16")
    assert result.final["final_eval_overall_accuracy"] > 0.6
