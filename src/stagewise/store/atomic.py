"""Writes that readers never see half done, and a lock shared between processes.

``atomic_write`` writes a temporary file in the same directory, fsyncs it, renames it over
the target and fsyncs the directory: a reader sees the old bytes or the new ones, whatever
moment the writer is killed at. ``append_line`` adds one line to a JSON-lines log and
fsyncs it; a line cut short by a crash is closed off by the next append.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import filelock

from stagewise.errors import StagewiseError, StateLockTimeoutError


class StorageWriteError(StagewiseError):
    """A file could not be written (disk full, permissions, ...)."""


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> None:
    target = Path(path)
    if not target.name or target.name in (".", ".."):
        raise StorageWriteError("not a file path", location=str(path), hint="name a file to write")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StorageWriteError(
            f"could not write the file: {exc.strerror or exc}",
            location=str(target),
            hint="check free disk space and permissions; the previous content is unchanged",
        ) from exc


def remove_stale_temporaries(path: str | os.PathLike[str]) -> None:
    """Delete temp files that killed writers of ``path`` left behind. Call it only while
    holding the lock that every writer of ``path`` takes."""
    target = Path(path)
    for leftover in target.parent.glob(f".{target.name}.*.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def open_log(path: str | os.PathLike[str]) -> int:
    """Open a JSON-lines log for appending (created if missing); returns the descriptor.
    Opening first lets a caller find out that the log is unwritable before it changes
    anything else."""
    try:
        return os.open(Path(path), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        raise StorageWriteError(
            f"cannot open the log for appending: {exc.strerror or exc}",
            location=str(path),
            hint="check that it is a file, and the disk space and permissions",
        ) from exc


def write_line(fd: int, line: str, path: str | os.PathLike[str]) -> None:
    """Append one line to a log opened with :func:`open_log`, and fsync it."""
    text = line.rstrip("\n") + "\n"
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            text = "\n" + text  # close off a line cut short by a crash
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    except OSError as exc:
        raise StorageWriteError(
            f"could not append to the log: {exc.strerror or exc}",
            location=str(path),
            hint="check free disk space and permissions",
        ) from exc


def append_line(path: str | os.PathLike[str], line: str) -> None:
    fd = open_log(path)
    try:
        write_line(fd, line, path)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(lock_path: str | os.PathLike[str], timeout: float = 60.0) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (released by the OS if the holder dies)."""
    lock = filelock.FileLock(os.fspath(lock_path), timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise StateLockTimeoutError(
            f"another process has held the state lock for more than {timeout:.0f} s",
            location=os.fspath(lock_path),
            hint="wait for the other stage command or training run to finish, then retry",
        ) from None
    try:
        yield
    finally:
        lock.release()
