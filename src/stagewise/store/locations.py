"""Where files live: local paths, or fsspec URLs (``s3://``, and seed 000's ``obs://``).

``obs://`` (Huawei OBS) is S3-compatible: it is read through s3fs like ``s3://``, with the
endpoint from ``AWS_ENDPOINT_URL`` (or ``OBS_ENDPOINT_URL``).
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from stagewise.errors import StagewiseError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_S3_ALIASES = {"obs": "s3"}


def is_url(location: str) -> bool:
    """True for ``scheme://...`` other than ``file://``."""
    return bool(_URL.match(location)) and not location.startswith("file://")


def local_path(location: str) -> str:
    return location.removeprefix("file://")


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem and the path within it for ``url``."""
    import fsspec  # fsspec is light, but only remote work needs it

    scheme, rest = url.split("://", 1)
    scheme = _S3_ALIASES.get(scheme.lower(), scheme.lower())
    options: dict[str, Any] = {}
    if scheme == "s3":
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("OBS_ENDPOINT_URL")
        if endpoint:
            options["endpoint_url"] = endpoint
    try:
        return fsspec.core.url_to_fs(f"{scheme}://{rest}", **options)
    except ImportError as exc:
        raise StagewiseError(
            f"no filesystem driver for {scheme}:// URLs is installed",
            location=url,
            hint="pip install 'stagewise[s3]'" if scheme == "s3" else str(exc),
        ) from None
    except ValueError as exc:
        raise StagewiseError(f"unknown URL scheme: {exc}", location=url) from None


def join(base: str, relative: str) -> str:
    """Join a relative path onto a local directory or a URL prefix."""
    if is_url(relative) or os.path.isabs(relative):
        return relative
    if is_url(base):
        return base.rstrip("/") + "/" + relative.lstrip("/")
    return os.path.join(base, relative)


def timestamped_folder(root: str | None, name: str, overrides: list[str]) -> Path:
    """Seed 001's ``outputs/<name>/<date>/<time>-<overrides>/`` (Hydra's run folder),
    created empty; ``root`` defaults to ``STAGEWISE_OUTPUTS`` or ``./outputs``."""
    from stagewise.config.overrides import override_dirname, parse_overrides

    base = Path(root or os.environ.get("STAGEWISE_OUTPUTS") or "outputs").resolve()
    now = datetime.now()
    suffix = override_dirname(parse_overrides(overrides)) if overrides else ""
    leaf = now.strftime("%H-%M-%S") + (f"-{suffix}" if suffix else "")
    folder = base / name / now.strftime("%Y-%m-%d") / leaf
    folder.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = folder, 1
    while True:  # made here, so that two runs started in one second get their own
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            candidate, n = folder.with_name(f"{folder.name}_{n}"), n + 1
