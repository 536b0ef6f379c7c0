"""Where a stage writes: ``output_dir``, or seed 001's timestamped folder
``outputs/stage_<n>_<name>/<date>/<time>-<overrides>/``, with the resolved config beside
the results (``config.yaml``: every setting, defaults included)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stagewise.config.base import FormatModel
from stagewise.config.loading import dump_yaml
from stagewise.store.atomic import atomic_write
from stagewise.store.locations import timestamped_folder

FOLDERS = {
    "warmup": "stage_1_warmup",
    "selection": "stage_2_selection",
    "finetune": "stage_3_finetune",
}


def output_folder(config: FormatModel, stage: str, overrides: Sequence[str] = ()) -> Path:
    """The stage's folder, created. Under torchrun, rank 0 makes it and tells the others
    (one timestamped folder per run)."""
    made = [""]
    if _rank() == 0:
        chosen = getattr(config, "output_dir", None)
        folder = (
            Path(chosen) if chosen else timestamped_folder(None, FOLDERS[stage], list(overrides))
        )
        folder.mkdir(parents=True, exist_ok=True)
        made = [str(folder)]
    if _shared():
        import torch.distributed as dist

        dist.broadcast_object_list(made, src=0)
    return Path(made[0])


def record_config(folder: Path, config: FormatModel) -> None:
    """``config.yaml``: the settings the stage runs with, written once the run's checks
    have passed (a refused resume leaves the earlier run's file as it was)."""
    if _rank() == 0:
        atomic_write(folder / "config.yaml", dump_yaml(config.model_dump(mode="json")))


def _shared() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if _shared() else 0
