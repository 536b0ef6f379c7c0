"""Task outputs on disk: fingerprints, and publishing a finished output atomically.

A task writes each output under a temporary name beside its final place; only when the
task has succeeded is it renamed into place, so a half-written output never sits under
the name that later tasks (and cache hits) read. A file replaces the old one in one
rename; a folder is swapped by two (old aside, new in), so for a moment the name is
missing, and a publish killed between the two leaves the old folder aside, removed by the
next publish. Fingerprints are taken from names, sizes
and modification times (like make), which is cheap enough to check on every cache hit.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

from stagewise.errors import StagewiseError

MAX_FILES = 200_000


def fingerprint(path: str | os.PathLike[str]) -> tuple[str, int] | None:
    """(hex digest, total bytes) of a file or folder, or None if it does not exist (or, for
    a URL, if its store tells neither an ETag nor a modification time)."""
    if "://" in str(path):
        return _remote_fingerprint(str(path))
    root = Path(path)
    try:
        info = root.stat()
    except FileNotFoundError:
        return None
    digest = hashlib.sha256()
    if not root.is_dir():
        digest.update(f"f:{info.st_size}:{info.st_mtime_ns}".encode())
        return digest.hexdigest(), info.st_size
    total = 0
    count = 0
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            item = Path(folder, name)
            with contextlib.suppress(FileNotFoundError):
                stat = item.stat()
                relative = item.relative_to(root).as_posix()
                digest.update(f"{relative}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
                total += stat.st_size
                count += 1
            if count >= MAX_FILES:
                digest.update(b"...")
                return digest.hexdigest(), total
    return digest.hexdigest(), total


def _remote_fingerprint(url: str) -> tuple[str, int] | None:
    from stagewise.store.locations import filesystem

    try:
        fs, path = filesystem(url)
        info = fs.info(path)
    except Exception:  # any store error: unknown, so never a cache hit
        return None
    stamp = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime")
    if stamp is None:
        return None
    size = int(info.get("size") or 0)
    return hashlib.sha256(f"u:{size}:{stamp}".encode()).hexdigest(), size


def staging_path(final: str, tag: str) -> str:
    """Where an attempt writes ``final`` before it is published."""
    head, name = os.path.split(os.path.normpath(final))
    return os.path.join(head, f".{name}.partial-{tag}")


def publish(staging: str, final: str, tag: str) -> None:
    """Move ``staging`` to ``final``, replacing what was there; fsync the folder."""
    final = os.path.normpath(final)
    aside = None
    _remove_old_asides(final)
    try:
        if not os.path.isdir(staging) and not os.path.isdir(final):
            os.replace(staging, final)  # a file: readers see the old bytes or the new
        elif os.path.lexists(final):
            head, name = os.path.split(final)
            aside = os.path.join(head, f".{name}.old-{tag}")
            remove(aside)
            os.replace(final, aside)
        if os.path.lexists(staging):
            os.replace(staging, final)
        _fsync_dir(os.path.dirname(final) or ".")
    except OSError as exc:
        raise StagewiseError(
            f"could not publish a task output: {exc.strerror or exc}",
            location=final,
            hint="check free disk space and permissions, then resume the run",
        ) from exc
    if aside:
        remove(aside)


def _remove_old_asides(final: str) -> None:
    """Folders set aside by an earlier publish that was killed halfway."""
    head, name = os.path.split(final)
    with contextlib.suppress(OSError):
        for entry in os.listdir(head or "."):
            if entry.startswith(f".{name}.old-"):
                remove(os.path.join(head, entry))


def remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(path)


def _fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
