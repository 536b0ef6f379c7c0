"""The README's quickstart and SDK example run exactly as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import run_bash

README = Path(__file__).parents[2] / "README.md"


def block(name: str) -> str:
    text = README.read_text()
    match = re.search(rf"<!-- {name}:start -->\n```\w+\n(.*?)```\n<!-- {name}:end -->", text, re.S)
    assert match, f"README has no {name} block"
    return match.group(1)


def test_quickstart_commands_run(tmp_path: Path) -> None:
    result = run_bash("-euo", "pipefail", "-c", block("quickstart"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "switched pretraining -> finetuning" in result.stdout
    assert "stages/ab_testing/variant_b.json" in result.stdout
    assert (tmp_path / "my_release_repo" / "stage_report.md").is_file()


def test_sdk_example_runs(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "stagewise", "release", "init", "my_release_repo"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    result = subprocess.run(
        [sys.executable, "-c", block("sdk")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "active_stage pretraining stages/pretraining.json" in result.stdout
    assert "epoch 50: pretraining -> finetuning" in result.stdout
    assert "epoch 100: finetuning -> evaluation" in result.stdout


def test_data_commands_and_loader_run(tmp_path: Path) -> None:
    result = run_bash("-euo", "pipefail", "-c", block("data"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: 8 files match their checksums" in result.stdout
    assert "epoch: 400 samples" in result.stdout
    loaded = subprocess.run(
        [sys.executable, "-c", block("data-sdk")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    expected = "torch.Size([32, 12, 64, 1]) torch.Size([32, 12, 64, 1]) torch.Size([32, 12, 2])"
    assert expected in loaded.stdout


def test_pipeline_commands_run(tmp_path: Path) -> None:
    (tmp_path / "pipeline.yaml").write_text(block("pipeline-yaml"))
    result = run_bash("-euo", "pipefail", "-c", block("pipeline"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lr=0.05 rows=1000" in result.stdout  # `runs logs RUN evaluate`
    assert "written by train" in result.stdout and "written by prepare" in result.stdout
    assert result.stdout.count(" cached (from run ") == 3
    assert (tmp_path / "outputs" / "hello-pipeline").is_dir()


def test_train_commands_run(tmp_path: Path) -> None:
    """The README's `stagewise train` / `stagewise eval` lines, on a seed 003 config over
    two small real datasets written where the README's paths point."""
    from tests.train.conftest import config_data, dataset_records, write_config, write_jsonl

    files: dict[str, list[str]] = {"train": [], "val": []}
    for name in ("iris", "wine"):
        train, test = dataset_records(name)
        files["train"].append(str(write_jsonl(tmp_path / "data" / name / "train.jsonl", train)))
        files["val"].append(str(write_jsonl(tmp_path / "data" / name / "test.jsonl", test)))
    (tmp_path / "configs").mkdir()
    raw = config_data(files, Path("outputs/multi_datasets"))
    write_config(tmp_path / "configs" / "multi_datasets_config.yaml", raw)
    result = run_bash("-euo", "pipefail", "-c", block("train"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "📊 TRAIN - OVERALL" in result.stdout and "完整评估结果" in result.stdout
    assert (tmp_path / "outputs" / "multi_datasets" / "best_model" / "model.safetensors").exists()


def test_select_commands_run(tmp_path: Path) -> None:
    """The README's `stagewise select` lines: the seed's three stages and batch selection,
    in a copy of examples/llm-selection."""
    (tmp_path / "examples").symlink_to(README.parent / "examples")
    result = run_bash("-euo", "pipefail", "-c", block("select"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    work = tmp_path / "my-selection"
    assert (work / "outputs" / "warmup" / "full_rank_weights.pt").is_file()
    assert (work / "outputs" / "selection" / "router_data" / "docs_router_data.pt").is_file()
    assert "48 of 192 records selected" in result.stdout
    finetuned = list((work / "outputs" / "stage_3_finetune").rglob("checkpoint-final"))
    assert len(finetuned) == 1 and (finetuned[0] / "adapter_model.safetensors").is_file()
