"""Where files live: local paths, or fsspec URLs (``s3://``, and seed 000's ``obs://``).

``obs://`` (Huawei OBS) is S3-compatible: it is read through s3fs like ``s3://``, with the
endpoint from ``AWS_ENDPOINT_URL`` (or ``OBS_ENDPOINT_URL``).
"""

from __future__ import annotations

import os
import re
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
