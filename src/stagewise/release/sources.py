"""Where a release repo's files are read from: a directory, a remote URL, or a git ref.

A remote repo (``s3://bucket/repo``, ``obs://...``) is read-only: each file read is
also written to a local snapshot under ``<STAGEWISE_HOME>/cache/releases/``, so that what a
run resolved can be inspected afterwards. A git ref (tag or commit) reads every file as
it was at that ref, without a checkout (``git show REF:path``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from stagewise.errors import ReleaseSourceError
from stagewise.store import locations
from stagewise.store.atomic import atomic_write


def inside_repo(rel: str, source: str) -> str:
    """``rel`` if it names a file inside the repo. A remote or versioned repo is read by
    path, and what it names is written to a local snapshot: an absolute path or '..'
    could reach outside both, so they are refused."""
    parts = rel.replace("\\", "/").split("/")
    if not rel or rel.startswith("/") or ".." in parts or "\0" in rel or locations.is_url(rel):
        raise ReleaseSourceError(
            f"{rel!r} is not a path inside the repo",
            location=source,
            hint="in a remote or versioned repo, config files are named relative to the repo, "
            "without '..'",
        )
    return rel


class LocalSource:
    writable = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self.display = str(root)

    def read_bytes(self, rel: str) -> bytes | None:
        path = self.root / rel
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except ValueError as exc:  # e.g. a NUL byte in the name
            raise ReleaseSourceError(f"not a usable file name: {exc}", location=repr(rel)) from None
        except IsADirectoryError:
            raise ReleaseSourceError(
                "expected a file, found a directory", location=str(path)
            ) from None
        except OSError as exc:
            raise ReleaseSourceError(
                f"cannot read the file: {exc.strerror}", location=str(path)
            ) from None

    def describe(self, rel: str) -> str:
        return rel

    def dataset_location(self, location: str) -> str:
        location = locations.local_path(location)
        return locations.join(str(self.root), location)


class RemoteSource:
    writable = False

    def __init__(self, url: str, cache_home: Path) -> None:
        self.url = url.rstrip("/")
        self.display = self.url
        self.fs, self.path = locations.filesystem(self.url)
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        self.cache = cache_home / "cache" / "releases" / digest

    def read_bytes(self, rel: str) -> bytes | None:
        remote = f"{self.path}/{inside_repo(rel, self.url)}"
        try:
            data = self.fs.cat_file(remote)
        except FileNotFoundError:
            return None
        except Exception as exc:  # every driver has its own errors: report them all alike
            raise ReleaseSourceError(
                f"cannot read the remote release repo: {type(exc).__name__}: {exc}",
                location=f"{self.url}/{rel}",
                hint="check the URL, the credentials (AWS_ACCESS_KEY_ID, ...) and, for "
                "S3-compatible stores, AWS_ENDPOINT_URL",
            ) from None
        snapshot = self.cache / rel
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(snapshot, data)
        return data

    def describe(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    def dataset_location(self, location: str) -> str:
        return locations.join(self.url, location)


class GitRefSource:
    writable = False

    def __init__(self, root: Path, ref: str) -> None:
        self.root, self.ref = root, ref
        self.display = f"{root}@{ref}"
        result = self._git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        if result.returncode != 0:
            raise ReleaseSourceError(
                f"{ref!r} is not a tag, branch or commit of this git repo",
                location=str(root),
                hint="list tags with 'git tag', e.g. stage/<stage>/<version>",
            )
        self.commit = result.stdout.decode().strip()

    def _git(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                ["git", "-C", str(self.root), *args], capture_output=True, check=False
            )
        except FileNotFoundError:
            raise ReleaseSourceError(
                "git is not installed", hint="install git to read refs"
            ) from None

    def read_bytes(self, rel: str) -> bytes | None:
        result = self._git("show", f"{self.commit}:./{inside_repo(rel, self.display)}")
        return result.stdout if result.returncode == 0 else None

    def describe(self, rel: str) -> str:
        return f"{rel}@{self.ref}"

    def dataset_location(self, location: str) -> str:
        return locations.join(str(self.root), locations.local_path(location))


ReleaseSource = LocalSource | RemoteSource | GitRefSource


def make_source(target: str, ref: str | None, home: Path) -> ReleaseSource:
    if locations.is_url(target):
        if ref:
            raise ReleaseSourceError(
                "a git ref can only be read from a local git checkout", location=target
            )
        return RemoteSource(target, home)
    try:
        root = Path(locations.local_path(target)).expanduser().resolve()
        is_dir = root.is_dir()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ReleaseSourceError(
            f"not a usable repo path: {reason}", location=target[:200]
        ) from None
    if not is_dir:
        raise ReleaseSourceError(
            "the release repo directory does not exist",
            location=str(root),
            hint="pass --repo DIR, set STAGE_CONFIG_PATH, or create one: stagewise release init DIR",
        )
    if ref:
        return GitRefSource(root, ref)
    return LocalSource(root)


def home_dir(env: Mapping[str, str] | None = None) -> Path:
    """stagewise's state folder: STAGEWISE_HOME (from ``env``, else the process), or ./.stagewise."""
    home = (env or {}).get("STAGEWISE_HOME") or os.environ.get("STAGEWISE_HOME") or ".stagewise"
    return Path(home).expanduser().resolve()
