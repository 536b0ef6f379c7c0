"""The Ray executor: each task attempt is a Ray task sized by the task's resources.

With no address it starts a local Ray for the run (and stops it at the end); with
``--ray-address`` it joins an existing cluster and leaves it running. Ray's own retries
are off: the runner decides retries, so that every attempt is a row in the metadata
database. A timeout or a cancel kills the Ray worker that runs the attempt.

This is the only module of stagewise that imports ``ray``; without Ray installed it still
imports, and asking for the executor says how to install it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Hashable, Sequence
from typing import Any

from stagewise.errors import PipelineError
from stagewise.pipeline.executors.base import Executor
from stagewise.pipeline.resources import Request
from stagewise.pipeline.worker import Outcome, Work, execute

try:
    import ray
    from ray.exceptions import RayError
except ImportError:  # a light install: the error comes when the executor is asked for
    ray = None  # type: ignore[assignment]
    RayError = Exception  # type: ignore[assignment,misc]


def run_attempt(work: Work, paths: Sequence[str]) -> Outcome:
    """Inside a Ray worker: import what the runner can import, then run the attempt."""
    # A relative "path/file.py:function" or a task module beside the pipeline must resolve
    # as it does for the runner (on a cluster these paths may not exist: harmless).
    for entry in reversed(paths):
        if entry and entry not in sys.path:
            sys.path.insert(0, entry)
    if work.cwd and os.path.isdir(work.cwd):
        os.chdir(work.cwd)
    return execute(work)


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None) -> None:
        if ray is None:
            raise PipelineError(
                "the ray executor needs Ray, which is not installed",
                hint="pip install 'stagewise[ray]'",
            )
        self.address = address
        self.num_cpus = num_cpus
        self._owns_ray = False
        self._remote: Any = None
        self._shaped: dict[tuple[float, float, int], Any] = {}
        self._paths: tuple[str, ...] = ()
        self._keys: dict[Any, Hashable] = {}  # ObjectRef -> key, for what still runs
        self._refs: dict[Hashable, Any] = {}  # key -> ObjectRef
        self._ready: list[tuple[Hashable, Outcome]] = []
        self._capacity: Request | None = None

    @property
    def capacity(self) -> Request:
        if self._capacity is None:
            self.start()
            found = ray.cluster_resources()
            self._capacity = Request(
                cpu=float(found.get("CPU", 0.0)),
                memory=int(found.get("memory", 0)),
                gpu=float(found.get("GPU", 0.0)),
            )
        return self._capacity

    def start(self) -> None:
        if self._remote is not None:
            return
        if not ray.is_initialized():
            self._connect()
        # One remote function for the run, resized per task with .options(): Ray exports
        # the function once instead of once per task.
        self._remote = ray.remote(max_retries=0)(run_attempt)
        self._shaped.clear()
        self._paths = tuple(p or os.getcwd() for p in sys.path)

    def _connect(self) -> None:
        options: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "ignore_reinit_error": True,
        }
        if self.address is None and self.num_cpus is not None:
            options["num_cpus"] = self.num_cpus
        if self.address is not None:
            _check_reachable(self.address)
        try:
            ray.init(address=self.address, **options)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
            raise PipelineError(
                f"could not start or reach {where}: {exc}",
                hint="check the address (host:port of the head node, or 'auto'), that the "
                "cluster is up ('ray status'), or leave --ray-address out to run a local Ray",
            ) from exc
        self._owns_ray = self.address is None

    def submit(self, key: Hashable, work: Work, request: Request) -> None:
        self.start()
        try:
            shape = (request.cpu, request.gpu, request.memory)
            remote = self._shaped.get(shape)
            if remote is None:  # .options() per task cost as much as the task's round trip
                remote = self._remote.options(
                    num_cpus=request.cpu, num_gpus=request.gpu, memory=request.memory or None
                )
                self._shaped[shape] = remote
            ref = remote.remote(work, self._paths)
        except (RayError, TypeError, ValueError) as exc:
            self._ready.append((key, Outcome(False, error=f"Ray refused the task: {exc}")))
            return
        self._keys[ref] = key
        self._refs[key] = ref

    def wait(self, timeout: float) -> list[tuple[Hashable, Outcome]]:
        if self._ready:
            timeout = 0.0
        refs = list(self._keys)
        if refs:
            ready, rest = ray.wait(refs, num_returns=1, timeout=timeout)
            if ready and rest:  # everything that is done by now, not just the first one
                ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            for ref in ready:
                key = self._keys.pop(ref)
                self._refs.pop(key, None)
                self._ready.append((key, self._outcome(ref)))
        elif timeout > 0:
            time.sleep(timeout)
        done, self._ready = self._ready, []
        return done

    @staticmethod
    def _outcome(ref: Any) -> Outcome:
        try:
            outcome = ray.get(ref)
        except RayError as exc:  # the worker died, ran out of memory, was killed
            return Outcome(False, error=f"the Ray task did not finish: {exc}")
        if not isinstance(outcome, Outcome):
            return Outcome(False, error=f"the Ray task returned {outcome!r}, not an outcome")
        return outcome

    def cancel(self, key: Hashable, state: str, reason: str) -> None:
        ref = self._refs.pop(key, None)
        if ref is None:
            return
        self._keys.pop(ref, None)
        # force: kill the worker, so that a task stuck in C code or a shell command stops
        # too (Ray kills the worker's child processes with it).
        with contextlib.suppress(RayError, ValueError, TypeError):
            ray.cancel(ref, force=True)
        self._ready.append((key, Outcome(False, error=reason, state=state)))

    def shutdown(self) -> None:
        for key in list(self._refs):
            self.cancel(key, "cancelled", "the runner stopped")
        self._ready.clear()
        self._remote = None
        self._shaped.clear()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False


def _check_reachable(address: str) -> None:
    """Fail fast on a head node that does not answer: ``ray.init`` retries for minutes."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if address in ("auto", "local") or not host or not port.isdigit():
        return  # Ray resolves these itself, and says clearly when none runs
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except OSError as exc:
        raise PipelineError(
            f"cannot reach the Ray cluster at {address}: {exc}",
            hint="check the address (host:port of the head node, e.g. 10.0.0.5:6379, or "
            "ray://host:10001), that the cluster is up ('ray status' on the head node), or "
            "leave --ray-address out to run a local Ray",
        ) from exc
