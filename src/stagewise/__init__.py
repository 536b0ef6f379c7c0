"""stagewise: staged, multi-dataset model training.

The SDK: open a data release repo, resolve which dataset config a run trains on, switch
stages, and let a training loop drive automatic switching.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stagewise.errors import (
    ConfigError,
    ReleaseSourceError,
    StageError,
    StageNotFoundError,
    StagewiseError,
)

if TYPE_CHECKING:
    from stagewise.release import Decision, Release, Resolution, StageController, open_release

__version__ = "0.1.0"

_FROM_RELEASE = {"Decision", "Release", "Resolution", "StageController", "open_release"}


def __getattr__(name: str) -> Any:
    # The release SDK is imported on first use, so that `import stagewise.data...` (a
    # training process opening a sample store) does not pay for the stage manager.
    if name in _FROM_RELEASE:
        import stagewise.release as release

        return getattr(release, name)
    raise AttributeError(f"module 'stagewise' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "Decision",
    "Release",
    "ReleaseSourceError",
    "Resolution",
    "StageController",
    "StageError",
    "StageNotFoundError",
    "StagewiseError",
    "__version__",
    "open_release",
]
