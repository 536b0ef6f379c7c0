"""What the runner needs from an executor: capacity, launch, wait, cancel, shut down.

An executor runs :class:`~stagewise.pipeline.worker.Work` items somewhere (worker
processes on this machine, Ray tasks on a cluster) and reports each one's
:class:`~stagewise.pipeline.worker.Outcome` exactly once. It keeps no state of its own
beyond what is running: everything durable is the runner's, in the metadata database.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable

from stagewise.pipeline.resources import Request
from stagewise.pipeline.worker import Outcome, Work


class Executor(ABC):
    name: str = "executor"

    @property
    @abstractmethod
    def capacity(self) -> Request:
        """All that this executor can ever give at once (CPU, memory, GPUs)."""

    @property
    def slots(self) -> int:
        """How many attempts may run at once, whatever their requests."""
        return 1 << 30

    def describe(self) -> str:
        return f"{self.name} ({self.capacity.describe()})"

    @abstractmethod
    def start(self) -> None:
        """Get ready to launch (start workers, connect to a cluster)."""

    @abstractmethod
    def submit(self, key: Hashable, work: Work, request: Request) -> None:
        """Start ``work``; its outcome comes back from :meth:`wait` under ``key``."""

    @abstractmethod
    def wait(self, timeout: float) -> list[tuple[Hashable, Outcome]]:
        """Outcomes that are ready, waiting at most ``timeout`` seconds for the first."""

    @abstractmethod
    def cancel(self, key: Hashable, state: str, reason: str) -> None:
        """Stop ``key``'s attempt; it comes back from :meth:`wait` as failed with ``state``."""

    @abstractmethod
    def shutdown(self) -> None:
        """Stop everything still running and release the workers."""
