"""What a task needs (CPU cores, bytes of memory, GPUs), parsed from Kubernetes-style
quantities: ``cpu: '500m'``, ``memory: '4Gi'``, ``gpu: 1``.

Kept free of pydantic and the config package: worker processes import it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_MEMORY_UNITS = {
    "": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip


@dataclass(frozen=True)
class Request:
    """What one task needs: CPU cores, bytes of memory, GPUs."""

    cpu: float = 1.0
    memory: int = 0
    gpu: float = 0.0

    def fits(self, free: Request) -> bool:
        return (
            self.cpu <= free.cpu + 1e-9
            and self.memory <= free.memory
            and self.gpu <= free.gpu + 1e-9
        )

    def __add__(self, other: Request) -> Request:
        return Request(self.cpu + other.cpu, self.memory + other.memory, self.gpu + other.gpu)

    def __sub__(self, other: Request) -> Request:
        return Request(self.cpu - other.cpu, self.memory - other.memory, self.gpu - other.gpu)

    def describe(self) -> str:
        memory = f", {self.memory / 2**30:.1f} GiB" if self.memory else ""
        gpu = f", {self.gpu:g} GPU" if self.gpu else ""
        return f"{self.cpu:g} CPU{memory}{gpu}"


def parse_request(resources: Any) -> Request:
    """A task's ``resources`` (anything with cpu, memory and gpu attributes) as numbers;
    ValueError when a quantity is unreadable or impossible."""
    cpu = _quantity(resources.cpu, "cpu", {"": 1.0, "m": 0.001})
    gpu = _quantity(resources.gpu, "gpu", {"": 1.0})
    memory = 0 if resources.memory is None else _quantity(resources.memory, "memory", _MEMORY_UNITS)
    if cpu <= 0:
        raise ValueError(f"cpu must be more than 0, found {resources.cpu!r}")
    if gpu > 1 and gpu != int(gpu):
        raise ValueError(f"a fraction of a GPU must be below 1 (found {resources.gpu!r})")
    return Request(cpu=cpu, memory=int(memory), gpu=gpu)


def _quantity(value: Any, what: str, units: dict[str, float]) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, found {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    else:
        match = _QUANTITY.match(str(value))
        if not match or match.group(2) not in units:
            examples = {"cpu": "2, '0.5' or '500m'", "gpu": "1 or 0.5"}.get(
                what, "'4Gi' or '512Mi'"
            )
            raise ValueError(f"{what} must look like {examples}, found {value!r}")
        number = float(match.group(1)) * units[match.group(2)]
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{what} must be a finite number >= 0, found {value!r}")
    return number
