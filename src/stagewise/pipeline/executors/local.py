"""The local executor: a warm pool of worker processes on this machine.

Workers are plain ``python -m stagewise.pipeline.executors.local`` processes talking over
a pipe, started once per run (not once per task), so a task costs a pipe round trip. They
never re-run the caller's ``__main__`` (as multiprocessing's spawn would) and they die
with the runner (Linux: ``PR_SET_PDEATHSIG``), so a killed runner leaves no task running
behind its back. A timeout or a cancel stops the one worker (and the shell command it
runs) and starts a fresh one in its place.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Hashable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

from stagewise.pipeline.executors.base import Executor
from stagewise.pipeline.resources import Request
from stagewise.pipeline.worker import Outcome, Work, execute, stop_child


def machine_capacity() -> Request:
    """This machine's CPUs (those this process may use), memory and visible GPUs."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cpus = os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        memory = 0
    return Request(cpu=float(cpus), memory=int(memory), gpu=float(_visible_gpus()))


def _gpu_ids(count: int) -> list[str]:
    """The ids to hand out in CUDA_VISIBLE_DEVICES: those this process sees."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
        return ids[:count] if count <= len(ids) else [*ids, *map(str, range(len(ids), count))]
    return [str(i) for i in range(count)]


def _visible_gpus() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    return len([p for p in Path("/dev").glob("nvidia[0-9]*")])


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    conn: Connection  # runner -> worker
    reply: Connection  # worker -> runner
    key: Hashable | None = None


class LocalExecutor(Executor):
    name = "local"

    def __init__(
        self,
        *,
        cpu: float | None = None,
        memory: int | None = None,
        gpu: float | None = None,
        workers: int | None = None,
    ) -> None:
        found = machine_capacity()
        self._capacity = Request(
            cpu=found.cpu if cpu is None else cpu,
            memory=found.memory if memory is None else memory,
            gpu=found.gpu if gpu is None else gpu,
        )
        self._size = workers or max(1, int(self._capacity.cpu))
        self._idle: list[_Worker] = []
        self._busy: dict[Hashable, _Worker] = {}
        self._ready: list[tuple[Hashable, Outcome]] = []
        self._gpu_ids = _gpu_ids(int(self._capacity.gpu))
        self._gpu_load = dict.fromkeys(self._gpu_ids, 0.0)
        self._gpus_of: dict[Hashable, list[tuple[str, float]]] = {}

    @property
    def capacity(self) -> Request:
        return self._capacity

    @property
    def slots(self) -> int:
        return self._size

    def start(self) -> None:
        while len(self._idle) + len(self._busy) < self._size:
            self._idle.append(self._spawn())

    def submit(self, key: Hashable, work: Work, request: Request) -> None:
        if request.gpu > 0:
            work.env["CUDA_VISIBLE_DEVICES"] = ",".join(self._take_gpus(key, request.gpu))
        if not self._idle:
            self.start()
        worker = self._idle.pop()
        worker.key = key
        self._busy[key] = worker
        try:
            worker.conn.send_bytes(_encode(work))
        except (OSError, TypeError, ValueError) as exc:
            self._replace(worker)
            self._ready.append(
                (key, Outcome(False, error=f"could not hand the task to a worker: {exc}"))
            )

    def wait(self, timeout: float) -> list[tuple[Hashable, Outcome]]:
        if self._ready:
            timeout = 0.0
        if self._busy:
            by_reply = {worker.reply: worker for worker in self._busy.values()}
            for ready in wait(list(by_reply), timeout=timeout):
                self._collect(by_reply[ready])  # type: ignore[index]
        elif timeout > 0:
            time.sleep(timeout)
        done, self._ready = self._ready, []
        return done

    def cancel(self, key: Hashable, state: str, reason: str) -> None:
        worker = self._busy.get(key)
        if worker is None:
            return
        with contextlib.suppress(ProcessLookupError):
            worker.process.send_signal(signal.SIGTERM)
        try:
            worker.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.process.pid, signal.SIGKILL)  # what the task had started
        self._release_gpus(key)
        self._busy.pop(key)
        self._ready.append((key, Outcome(False, error=reason, state=state)))
        self._replace(worker)

    def _take_gpus(self, key: Hashable, amount: float) -> list[str]:
        """The least loaded GPUs for a task: whole ones for gpu >= 1, a share of one below."""
        ranked = sorted(self._gpu_ids, key=lambda g: self._gpu_load[g])
        share = (
            [(g, 1.0) for g in ranked[: int(amount)]]
            if amount >= 1
            else [(ranked[0], amount)]
            if ranked
            else []
        )
        for gpu, part in share:
            self._gpu_load[gpu] += part
        self._gpus_of[key] = share
        return [gpu for gpu, _ in share]

    def _release_gpus(self, key: Hashable) -> None:
        for gpu, part in self._gpus_of.pop(key, []):
            self._gpu_load[gpu] -= part

    def shutdown(self) -> None:
        for key in list(self._busy):
            self.cancel(key, "cancelled", "the runner stopped")
        for worker in self._idle:
            with contextlib.suppress(OSError):
                worker.conn.close()
        for worker in self._idle:
            # An idle worker exits as soon as its pipe closes; a plain wait() blocks in
            # waitpid, where wait(timeout=) would poll with sleeps.
            worker.process.wait()
        self._idle.clear()

    # ------------------------------------------------------------------ workers

    def _spawn(self) -> _Worker:
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        env = dict(os.environ)
        # The worker imports what the runner can: the runner's own import path first.
        env["STAGEWISE_WORKER_PATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stagewise.pipeline.executors.local",
                str(to_worker_r),
                str(from_worker_w),
            ],
            pass_fds=(to_worker_r, from_worker_w),
            env=env,
            stdin=subprocess.DEVNULL,
            # Its own process group, so that a cancel stops the processes a task started too
            # (and Ctrl-C on the terminal reaches only the runner).
            start_new_session=True,
        )
        os.close(to_worker_r)
        os.close(from_worker_w)
        return _Worker(
            process=process,
            conn=Connection(to_worker_w, readable=False),
            reply=Connection(from_worker_r, writable=False),
        )

    def _collect(self, worker: _Worker) -> None:
        key = worker.key
        self._busy.pop(key, None)
        worker.key = None
        try:
            outcome = Outcome(**json.loads(worker.reply.recv_bytes()))
        except (EOFError, OSError):  # the pipe closed: the worker died mid-task
            try:
                code = worker.process.wait(timeout=5)
                how = f"signal {-code}" if code < 0 else f"exit status {code}"
            except subprocess.TimeoutExpired:
                how = "its pipe closed"
            error = f"the worker process died ({how}) while running the task"
            self._release_gpus(key)
            self._ready.append((key, Outcome(False, error=error)))
            self._replace(worker)
            return
        self._release_gpus(key)
        self._idle.append(worker)
        self._ready.append((key, outcome))

    def _replace(self, worker: _Worker) -> None:
        with contextlib.suppress(OSError):
            worker.conn.close()
        with contextlib.suppress(OSError):
            worker.reply.close()
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()
        self._idle.append(self._spawn())


def _encode(item: Work | Outcome) -> bytes:
    # JSON, not pickle: what crosses the pipe is plain data, and nothing on either end
    # should be able to run code by sending bytes.
    return json.dumps(item.__dict__, default=repr).encode()  # asdict would deep-copy


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def serve(read_fd: int, write_fd: int) -> None:
    """A worker's loop: receive Work, run it, send the Outcome, until the pipe closes."""
    _die_with_parent()
    signal.signal(signal.SIGTERM, stop_child)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the runner's to handle
    for entry in reversed(os.environ.get("STAGEWISE_WORKER_PATH", "").split(os.pathsep)):
        if entry and entry not in sys.path:
            sys.path.insert(0, entry)
    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)
    while True:
        try:
            work = Work(**json.loads(inbox.recv_bytes()))
        except (EOFError, OSError):
            return
        outcome = execute(work)
        try:
            outbox.send_bytes(_encode(outcome))
        except (OSError, TypeError, ValueError):
            return


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
