"""stagewise: staged, multi-dataset model training.

The SDK: open a data release repo, resolve which dataset config a run trains on, switch
stages, and let a training loop drive automatic switching.
"""

from stagewise.errors import (
    ConfigError,
    ReleaseSourceError,
    StageError,
    StageNotFoundError,
    StagewiseError,
)
from stagewise.release import Decision, Release, Resolution, StageController, open_release

__version__ = "0.1.0"

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
