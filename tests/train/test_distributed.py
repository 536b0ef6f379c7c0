"""DDP with gloo across two CPU processes (torchrun) trains like one process of twice the
batch: the same samples per step, averaged gradients, metrics summed across ranks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.conftest import config_data, write_config


def _config(tmp_path: Path, data_files: dict[str, list[str]], name: str, batch: int) -> Path:
    raw = config_data(
        data_files, tmp_path / name, epochs=2, batch_size=batch, drop_last=True, log_every=3
    )
    raw["model"]["options"] = {"hidden": 32, "dropout": 0.0}  # no randomness per rank
    return write_config(tmp_path / f"{name}.yaml", raw)


def test_two_gloo_processes_equal_one_process_of_twice_the_batch(
    tmp_path: Path, data_files: dict[str, list[str]]
) -> None:
    single = subprocess.run(
        [sys.executable, "-m", "stagewise", "train", str(_config(tmp_path, data_files, "one", 32))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    ddp = subprocess.run(
        [
            *torchrun,
            "--nproc_per_node=2",
            "-m",
            "stagewise",
            "train",
            str(_config(tmp_path, data_files, "two", 16)),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "result.json").read_text())
    two = json.loads((tmp_path / "two" / "result.json").read_text())
    assert one["steps"] == two["steps"] > 0
    assert one["best"]["step"] == two["best"]["step"]
    assert set(one["final"]) == set(two["final"])
    for name, value in one["final"].items():
        assert two["final"][name] == pytest.approx(value, rel=1e-4, abs=1e-5), name
    # Metrics were reduced across ranks: the evaluation counted every sample once.
    assert two["final"]["final_eval_overall_samples"] == 38 + 45
    # Only rank 0 wrote: one metrics file, one set of checkpoints.
    logged = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(logged) == len((tmp_path / "one" / "metrics.jsonl").read_text().splitlines())
