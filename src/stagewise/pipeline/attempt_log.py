"""Where an attempt's output and its result go, written by the worker that runs it.

Each worker keeps two files per run folder, opened once: a scratch file that takes the
attempt's stdout and stderr (file descriptors 1 and 2, so child processes too), and a
journal of JSON lines, ``start`` before an attempt and ``end`` (with its result) after.
When an attempt printed something, its output is copied to ``logs/<task>.<attempt>.log``;
an attempt that printed nothing leaves no file. Creating one file per task cost more on a
virtual disk than everything else a task costs, and most tasks of a large DAG are quiet.

The journal is what a resumed run reads: an attempt with an ``end`` line finished, even
if the runner died before recording it (it is adopted, not run again); an attempt with only
a ``start`` line was interrupted, and its output so far is still in that worker's scratch.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_SCRATCH = ".worker-{pid}.out"
_JOURNAL = ".worker-{pid}.journal"
_open: dict[str, tuple[int, int]] = {}  # logs folder -> (scratch fd, journal fd)


@contextlib.contextmanager
def captured(log: str, task: str, attempt: int) -> Iterator[None]:
    """Send fds 1 and 2 to this worker's scratch while the attempt runs."""
    scratch, journal = _files(os.path.dirname(log))
    _append(journal, {"start": task, "attempt": attempt})
    os.ftruncate(scratch, 0)
    os.lseek(scratch, 0, os.SEEK_SET)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(scratch, 1)
    os.dup2(scratch, 2)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def finish(
    log: str, task: str, attempt: int, *, ok: bool, result: Any = None, error: str | None = None
) -> None:
    """Keep the attempt's output (if any, plus the error) and journal its end."""
    scratch, journal = _files(os.path.dirname(log))
    if os.fstat(scratch).st_size or error:
        _copy_out(scratch, log, error)
    if ok:
        _append(journal, {"end": task, "attempt": attempt, "ok": True, "result": result})


def read_result(logs: str | os.PathLike[str], task: str, attempt: int) -> dict[str, Any] | None:
    """The journalled end of ``task``'s ``attempt`` in a run's logs folder, if it finished."""
    for entry in _journal_entries(Path(logs)):
        if entry.get("end") == task and entry.get("attempt") == attempt and entry.get("ok"):
            return entry
    return None


def salvage(logs: str | os.PathLike[str], task: str, attempt: int, log: str) -> None:
    """An interrupted attempt's output so far, from the scratch of the worker that ran it."""
    folder = Path(logs)
    for journal in folder.glob(".worker-*.journal"):
        last = _last_line(journal)
        if last.get("start") == task and last.get("attempt") == attempt:
            scratch = journal.with_suffix(".out")
            with contextlib.suppress(OSError):
                data = scratch.read_bytes()
                if data:
                    Path(log).write_bytes(data + b"\n(interrupted: the runner stopped)\n")
            return


def _files(folder: str) -> tuple[int, int]:
    found = _open.get(folder)
    if found is None:
        pid = os.getpid()
        flags = os.O_RDWR | os.O_CREAT
        scratch = os.open(os.path.join(folder, _SCRATCH.format(pid=pid)), flags, 0o644)
        journal = os.open(
            os.path.join(folder, _JOURNAL.format(pid=pid)), flags | os.O_APPEND, 0o644
        )
        found = _open[folder] = (scratch, journal)
    return found


def _append(fd: int, entry: dict[str, Any]) -> None:
    # Not fsynced: it must survive the runner's death, not the machine's.
    line = (json.dumps(entry, default=repr) + "\n").encode()
    while line:
        line = line[os.write(fd, line) :]


def _copy_out(scratch: int, log: str, error: str | None) -> None:
    size = os.fstat(scratch).st_size
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        offset = 0
        while offset < size:
            chunk = os.pread(scratch, min(1 << 20, size - offset), offset)
            if not chunk:
                break
            os.write(out, chunk)
            offset += len(chunk)
        if error:
            os.write(out, error.encode("utf-8", errors="replace"))
    finally:
        os.close(out)


def _journal_entries(folder: Path) -> Iterator[dict[str, Any]]:
    for journal in folder.glob(".worker-*.journal"):
        with contextlib.suppress(OSError):
            for line in journal.read_text(encoding="utf-8", errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if isinstance(entry, dict):
                        yield entry


def _last_line(journal: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError, IndexError):
        entry = json.loads(journal.read_text(encoding="utf-8").splitlines()[-1])
        return entry if isinstance(entry, dict) else {}
    return {}
