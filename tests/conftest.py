"""Shared fixtures: a fresh release repo, the real CLI, and a clean environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stagewise.release.scaffold import init_repo

ASSETS = Path(__file__).parent / "assets"
SEED_REPO = ASSETS / "seed000"
ENV_VARS = (
    "TRAINING_STAGE",
    "AB_VARIANT",
    "STAGE_CONFIG_PATH",
    "FORCE_DATASET_CONFIG",
    "STAGEWISE_RUN_ID",
    "STAGEWISE_DB_URL",
    "STAGEWISE_OUTPUTS",
    "STAGEWISE_ARTIFACTS",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's stage variables; state goes to a temporary home."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STAGEWISE_HOME", str(tmp_path / ".stagewise-home"))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A release repo made by `stagewise release init`, with its example datasets."""
    root = tmp_path / "data_release_repo"
    root.mkdir()
    init_repo(root)
    return root


@pytest.fixture
def seed_repo(tmp_path: Path) -> Path:
    """A copy of seed 000's example files, unchanged."""
    root = tmp_path / "seed_repo"
    shutil.copytree(SEED_REPO, root)
    return root


CliRunner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(tmp_path: Path) -> CliRunner:
    """Run the real `stagewise` command; returns the completed process (text output)."""

    def run(
        *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        full_env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "stagewise", *args],
            capture_output=True,
            text=True,
            env=full_env,
            cwd=cwd or tmp_path,
            timeout=120,
            check=False,
        )

    return run


def run_bash(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run bash with this environment's `stagewise` first on PATH, as `make demo` does."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one thread: tiny models run fastest so, and do not fight other processes
    for this machine's two cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
