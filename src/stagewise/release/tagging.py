"""``stagewise release tag``: seed 000's ``stage/<stage>/<version>`` annotated git tags."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from stagewise.errors import StageError

_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")


def tag_stage(root: Path, stage: str, version: str, message: str) -> str:
    """Create the annotated tag ``stage/<stage>/<version>`` at HEAD; return its name."""
    if not _VERSION.match(version):
        raise StageError(
            f"{version!r} is not a valid version for a git tag",
            hint="use letters, digits, '.', '_' and '-', e.g. v1.2.0",
        )
    name = f"stage/{stage}/{version}"

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
        )

    if git("rev-parse", "--verify", "--quiet", "HEAD").returncode != 0:
        raise StageError(
            "the release repo is not a git repository with a commit",
            location=str(root),
            hint="run 'git init' and commit the repo first",
        )
    if git("rev-parse", "--verify", "--quiet", f"refs/tags/{name}").returncode == 0:
        raise StageError(
            f"the tag {name} exists already",
            location=str(root),
            hint="choose a new version; tags are immutable releases",
        )
    result = git("tag", "-a", name, "-m", message)
    if result.returncode != 0:
        raise StageError(
            f"git could not create the tag: {result.stderr.strip()}", location=str(root)
        )
    return name
