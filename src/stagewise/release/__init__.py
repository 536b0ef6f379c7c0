"""The data release repo (seed 000): stages, the active stage, resolution, switching.

from stagewise import release
repo = release.open("path/to/data_release_repo")
chosen = repo.resolve()            # honours FORCE_DATASET_CONFIG, TRAINING_STAGE, ...
chosen.config.dataset_index        # the datasets to train on
"""

from stagewise.release.controller import Decision, StageController
from stagewise.release.repo import Release, Resolution, open_release
from stagewise.release.switching import SwitchResult, rollback, switch

open = open_release

__all__ = [
    "Decision",
    "Release",
    "Resolution",
    "StageController",
    "SwitchResult",
    "open",
    "open_release",
    "rollback",
    "switch",
]
