"""Atomic writes, appends that survive a cut-off line, and locking."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from stagewise.store.atomic import (
    StorageWriteError,
    append_line,
    atomic_write,
    remove_stale_temporaries,
)


def test_atomic_write_replaces_content_and_keeps_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "state.yaml"
    target.write_text("old")
    target.chmod(0o600)
    atomic_write(target, "new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.yaml"]


def test_a_failed_rename_leaves_the_old_content_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state"
    target.mkdir()  # the rename over a non-empty directory fails, as a full disk would
    (target / "keep").write_text("old")
    with pytest.raises(StorageWriteError, match="could not write"):
        atomic_write(target, "new")
    assert (target / "keep").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


def test_write_into_a_missing_directory_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(StorageWriteError) as caught:
        atomic_write(tmp_path / "missing" / "state.yaml", "x")
    assert str(tmp_path / "missing" / "state.yaml") in str(caught.value)


def test_append_line_closes_a_line_cut_short_by_a_crash(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    append_line(log, '{"a": 1}')
    with log.open("a") as handle:
        handle.write('{"b": ')  # what a killed writer leaves
    append_line(log, '{"c": 3}')
    assert log.read_text().splitlines() == ['{"a": 1}', '{"b": ', '{"c": 3}']


def test_remove_stale_temporaries_only_touches_that_files_temporaries(tmp_path: Path) -> None:
    (tmp_path / ".state.yaml.abc.tmp").write_text("x")
    (tmp_path / ".other.yaml.abc.tmp").write_text("x")
    remove_stale_temporaries(tmp_path / "state.yaml")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.yaml.abc.tmp"]
