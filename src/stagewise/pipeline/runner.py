"""The runner: the state machine that takes a planned pipeline to a finished run.

Each turn of its loop collects finished attempts, publishes their outputs, decides retries,
skips the dependants of failed tasks, answers ready tasks from the cache or claims them,
and writes all of that in one transaction before anything new is launched, so the
database always knows every attempt that may have side effects. Killed at any moment, a
run resumes from the database: finished tasks stay finished, an attempt that finished but
was not recorded is adopted from its worker's journal (attempt_log.py), and the others are
marked interrupted and run again without using up a retry.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from stagewise.config.pipeline import PipelineFile
from stagewise.errors import PipelineError, StagewiseError
from stagewise.pipeline import attempt_log, code
from stagewise.pipeline.cache import cache_key
from stagewise.pipeline.executors.base import Executor
from stagewise.pipeline.plan import Plan, PlannedTask, plan
from stagewise.pipeline.resolve import Resolver
from stagewise.pipeline.resources import Request
from stagewise.pipeline.worker import Outcome, Work
from stagewise.store import artifacts as files
from stagewise.store.locations import timestamped_folder
from stagewise.store.runs import DONE, FINISHED, ArtifactRecord, Changes, Claim, RunRecord, RunStore

HEARTBEAT_SECONDS = 5.0
LEASE_SECONDS = 60.0  # a runner silent this long is taken for dead
CANCEL_CHECK_SECONDS = 0.5
POLL_SECONDS = 0.2  # how often a runner looks at tasks that another runner holds

Listener = Callable[[str, str, dict[str, Any]], None]


@dataclass
class RunOptions:
    """How a run runs (what it runs is the plan)."""

    executor: str = "local"
    no_cache: bool = False
    fit_resources: bool = False
    outputs: str | None = None  # the root of run folders (default ./outputs)
    mounts: dict[str, str] = field(default_factory=dict)
    ray_address: str | None = None
    workers: int | None = None
    workdir: str | None = None  # relative paths and tasks' working folder (default: here)

    def to_data(self) -> dict[str, Any]:
        return {
            "executor": self.executor,
            "no_cache": self.no_cache,
            "fit_resources": self.fit_resources,
            "mounts": self.mounts,
            "ray_address": self.ray_address,
            "workers": self.workers,
            "workdir": self.workdir,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> RunOptions:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def make_executor(options: RunOptions) -> Executor:
    if options.executor == "local":
        from stagewise.pipeline.executors.local import LocalExecutor

        return LocalExecutor(workers=options.workers)
    if options.executor == "ray":
        from stagewise.pipeline.executors import ray as ray_executor

        return ray_executor.RayExecutor(address=options.ray_address)
    raise PipelineError(
        f"unknown executor {options.executor!r}", hint="use --executor local or --executor ray"
    )


def output_folder(root: str | None, pipeline: str, overrides: list[str]) -> Path:
    """Seed 001's ``outputs/<pipeline>/<date>/<time>-<overrides>/``, created empty."""
    return timestamped_folder(root, pipeline, overrides)


def start_run(
    planned: Plan,
    *,
    overrides: list[str] | None = None,
    options: RunOptions | None = None,
    store: RunStore | None = None,
    executor: Executor | None = None,
) -> str:
    """Record a new run (all its tasks pending) and return its id; nothing runs yet."""
    options = options or RunOptions()
    options.workdir = os.path.abspath(options.workdir or os.getcwd())
    store = store or RunStore()
    if executor is not None:
        check_capacity(planned, executor, options.fit_resources)
    run_id = datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    folder = output_folder(options.outputs, planned.name, overrides or [])
    store.create_run(
        {
            "id": run_id,
            "pipeline": planned.name,
            "pipeline_version": _text(planned.pipeline.metadata.version),
            "state": "running",
            "spec": planned.pipeline.to_data(),
            "source": planned.source,
            "overrides": list(overrides or []),
            "executor": options.executor,
            "output_dir": str(folder),
            "options": options.to_data(),
        },
        [
            {"name": t.name, "position": t.position, "state": "pending"}
            for t in planned.tasks.values()
        ],
    )
    return run_id


def check_capacity(planned: Plan, executor: Executor, fit: bool) -> None:
    """Refuse, before the run starts, a task that the executor can never run."""
    capacity = executor.capacity
    too_big = [t for t in planned.tasks.values() if not t.request.fits(capacity)]
    if too_big and not fit:
        lines = ", ".join(f"'{t.name}' asks for {t.request.describe()}" for t in too_big)
        raise PipelineError(
            f"{lines}; the {executor.name} executor has {capacity.describe()} in all",
            location=planned.source,
            hint="lower the task's resources, run on a cluster that has them "
            "(--executor ray --ray-address ...), or pass --fit-resources to run such a "
            "task on all that this executor has",
        )


def run_pipeline(planned: Plan, **kwargs: Any) -> RunRecord:
    """Start a run of ``planned`` and run it to the end (the SDK's one call)."""
    listener = kwargs.pop("listener", None)
    options = kwargs.get("options") or RunOptions()
    store = kwargs.get("store") or RunStore()
    executor = kwargs.pop("executor", None) or make_executor(options)
    kwargs.update(store=store, options=options)
    run_id = start_run(planned, executor=executor, **kwargs)
    return Runner(run_id, store=store, executor=executor, listener=listener, planned=planned).run()


def resume_run(
    run_id: str,
    *,
    store: RunStore | None = None,
    executor: Executor | None = None,
    listener: Listener | None = None,
) -> RunRecord:
    """Finish ``run_id``: what finished stays finished, the rest runs."""
    store = store or RunStore()
    record = store.run(run_id)
    options = RunOptions.from_data(record.options)
    return Runner(
        record.id, store=store, executor=executor or make_executor(options), listener=listener
    ).run()


def cancel_run(run_id: str, *, store: RunStore | None = None) -> RunRecord:
    """Ask the run's runners to stop; with none alive, cancel what is left right here."""
    store = store or RunStore()
    record = store.run(run_id)
    if record.state not in ("running", "interrupted"):
        return record
    store.request_cancel(record.id)
    if not any(runner_alive(info) for info in store.runners(record.id).values()):
        changes = Changes()
        for task in store.tasks(record.id):
            if task.state not in FINISHED:
                changes.tasks.append(
                    (task.name, {"state": "cancelled", "finished_at": time.time()})
                )
                changes.event(record.id, "task_cancelled", task.name)
        changes.run.update(state="cancelled", finished_at=time.time(), error="cancelled")
        changes.event(record.id, "run_cancelled")
        store.apply(record.id, "cancel", changes)
    return store.run(record.id)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def runner_alive(info: tuple[str, int, float]) -> bool:
    """False when the runner (host, pid, last heartbeat) is gone: on this host its process
    is not there; on another host it has not been heard from for LEASE_SECONDS (hosts'
    clocks must agree, as NTP keeps them)."""
    host, pid, heartbeat = info
    if host == socket.gethostname()[:255]:
        # On this host the process table decides: a runner that was asleep (a laptop
        # lid, SIGSTOP) is not taken for dead, whatever its heartbeat says.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return time.time() - heartbeat <= LEASE_SECONDS


@dataclass
class _Running:
    task: str
    attempt: int
    request: Request
    deadline: float | None
    staging: dict[str, str]  # output name -> where this attempt writes it
    finals: dict[str, str]  # output name -> where it is published
    inputs: dict[str, str]  # input name -> artifact id
    key: str | None


class Runner:
    """Runs one run to its end; several runners may work on one run at once."""

    def __init__(
        self,
        run_id: str,
        *,
        store: RunStore,
        executor: Executor,
        listener: Listener | None = None,
        planned: Plan | None = None,
    ) -> None:
        self.store = store
        self.executor = executor
        self.listener = listener
        self.record = store.run(run_id)
        self.run_id = self.record.id
        self.options = RunOptions.from_data(self.record.options)
        self.workdir = self.options.workdir or os.getcwd()
        # The plan is rebuilt from the run's record (what resume has); a fresh run may
        # hand over the one it was started from.
        # Functions were checked when the run started; a resume from another folder must
        # not fail on a module that the workers (in the run's folder) import fine.
        self.plan = planned or plan(PipelineFile.model_validate(self.record.spec))
        self.plan.source = self.record.source
        self.folder = Path(self.record.output_dir)
        self.runner_id = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"
        self.states: dict[str, str] = {}
        self.failures: dict[str, int] = {}
        self.not_before: dict[str, float] = {}
        self.outputs: dict[tuple[str, str], ArtifactRecord] = {}
        self.running: dict[Hashable, _Running] = {}
        self.cache: dict[str, tuple[str, str, dict[str, ArtifactRecord]]] | None = None
        self.used = Request(0.0, 0, 0.0)
        self.requests = {
            name: _fit(t.request, executor.capacity, self.options.fit_resources)
            for name, t in self.plan.tasks.items()
        }
        self.prepared: dict[str, tuple[str, dict[str, str]]] = {}
        self.cache_checked: set[str] = set()
        self.by_uri: dict[str, ArtifactRecord] = {}
        # Kept up to date by _set, so that a turn of the loop costs what changed, not the DAG.
        self.unfinished: set[str] = set(self.plan.tasks)
        self.candidates: set[str] = set()  # tasks that may have become ready
        self.elsewhere: set[str] = set()  # tasks another runner holds
        self.position = {name: t.position for name, t in self.plan.tasks.items()}
        self.interrupted = False
        self.resolver = Resolver(
            self.plan,
            folder=self.folder,
            workdir=self.workdir,
            mounts=self.options.mounts,
            outputs=self.outputs,
        )
        self.launch_failures: list[tuple[Hashable, Outcome]] = []

    # ------------------------------------------------------------------ the loop

    def run(self) -> RunRecord:
        check_capacity(self.plan, self.executor, self.options.fit_resources)
        self.store.register_runner(self.runner_id, self.run_id, socket.gethostname(), os.getpid())
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "logs").mkdir(exist_ok=True)
        try:
            self._recover()
            self.executor.start()
            self._loop()
        except KeyboardInterrupt:
            self._interrupt()
        finally:
            self.executor.shutdown()
            with contextlib.suppress(Exception):
                self.store.retire_runner(self.runner_id)
            self.store.close()
        return self.store.run(self.run_id)

    def _loop(self) -> None:
        heartbeat = cancel_check = time.monotonic()
        first = True
        while True:
            changes = Changes()
            if first:
                changes.event(
                    self.run_id,
                    "runner_started",
                    runner=self.runner_id,
                    executor=self.executor.describe(),
                )
                first = False
            failed, self.launch_failures = self.launch_failures, []
            for key, outcome in [*failed, *self.executor.wait(0 if failed else self._wait_time())]:
                self._finish(self.running.pop(key), outcome, changes)
            now = time.monotonic()
            self._check_timeouts(now)
            if now - cancel_check > CANCEL_CHECK_SECONDS:
                cancel_check = now
                if self.store.run(self.run_id).cancel_requested:
                    self._cancel(changes)
                    return
            if now - heartbeat > HEARTBEAT_SECONDS:
                heartbeat = now
                self.store.heartbeat(self.runner_id)
            claims = self._schedule(changes)
            won = self.store.apply(self.run_id, self.runner_id, changes) if changes else {}
            self._notify(changes)
            for name in claims:
                if name in won:
                    attempt, self.failures[name] = won[name]
                    self._launch(claims[name], attempt)
                else:
                    self._set(name, "elsewhere")  # another runner claimed it first
            if self._all_finished():
                self._close()
                return
            if not self.running and not won and self._waiting_on_others():
                self._refresh()

    def _wait_time(self) -> float:
        """How long the executor may block: until the next deadline, retry or check."""
        now = time.time()
        waits = [CANCEL_CHECK_SECONDS]
        waits += [
            max(0.0, t - now)
            for n, t in self.not_before.items()
            if self.states.get(n) == "retrying"
        ]
        if self.launch_failures:
            return 0.0
        if self.running:
            clock = time.monotonic()
            waits += [max(0.0, r.deadline - clock) for r in self.running.values() if r.deadline]
            return min(waits)
        if len(waits) > 1:
            return min(waits)
        return 0.0

    # ------------------------------------------------------------------ deciding

    def _schedule(self, changes: Changes) -> dict[str, PlannedTask]:
        """Skip, answer from the cache, or claim the tasks that may have become ready."""
        claims: dict[str, PlannedTask] = {}
        free = self.executor.capacity - self.used
        slots = self.executor.slots - len(self.running)
        now = time.time()
        for name in sorted(self.candidates, key=self.position.__getitem__):
            state = self.states.get(name, "pending")
            task = self.plan.tasks[name]
            upstream = [self.states.get(u, "pending") for u in task.upstream]
            if any(s in ("failed", "skipped", "cancelled") for s in upstream):
                self._skip(name, changes)
                continue
            if not all(s in DONE for s in upstream):
                self.candidates.discard(name)  # back when its last upstream task finishes
                continue
            if state == "retrying" and self.not_before.get(name, 0) > now:
                continue
            if name not in self.prepared:
                try:
                    self.prepared[name] = self._cache_key(task)
                except StagewiseError as exc:  # e.g. a path that leaves its mount
                    self._fail_unstartable(name, exc, changes)
                    continue
            key, input_ids = self.prepared[name]
            if name not in self.cache_checked:
                self.cache_checked.add(name)
                if self._from_cache(task, key, input_ids, changes):
                    continue
            if slots <= 0:
                break  # the rest waits for a free slot (cache hits need none, but wait too)
            request = self.requests[name]
            if not request.fits(free):
                continue
            free, slots = free - request, slots - 1
            claims[name] = task
            self.candidates.discard(name)
            changes.claims.append(
                Claim(name, log=str(self.folder / "logs" / f"{name}.{{attempt}}.log"))
            )
        return claims

    def _fail_unstartable(self, name: str, exc: StagewiseError, changes: Changes) -> None:
        """A task that cannot even be prepared fails at once: retrying would not help."""
        error = f"the task could not be started: {exc.render()}"
        self._set(name, "failed")
        changes.tasks.append(
            (name, {"state": "failed", "finished_at": time.time(), "error": error})
        )
        changes.event(self.run_id, "task_failed", name, error=_headline(error))

    def _skip(self, name: str, changes: Changes) -> None:
        self._set(name, "skipped")
        reason = "an upstream task did not succeed"
        changes.tasks.append(
            (name, {"state": "skipped", "finished_at": time.time(), "error": reason})
        )
        changes.event(self.run_id, "task_skipped", name, reason=reason)

    def _cache_key(self, task: PlannedTask) -> tuple[str, dict[str, str]]:
        """The task's cache key, and the artifact id of each of its inputs."""
        spec = task.spec
        resolved = self.resolver.task(task)
        input_ids: dict[str, str] = {}
        prints: dict[str, str] = {}
        for name, source in resolved.inputs.items():
            artifact = self._input_artifact(source)
            input_ids[name] = artifact.id
            # An upstream output counts by its content; a file from outside by its path too.
            from_task = artifact.run_id is not None
            prints[name] = artifact.fingerprint if from_task else f"{source}@{artifact.fingerprint}"
        parameters = resolved.parameters
        if resolved.kind == "call":  # only the pipeline parameters the function takes count
            accepted = code.accepted_parameters(resolved.target)
            if accepted is not None:
                parameters = {
                    k: v for k, v in parameters.items() if k in accepted or k in spec.parameters
                }
        else:
            parameters = dict(spec.parameters)
        outputs = {
            o.name: resolved.outputs[o.name] if o.destination else None for o in spec.outputs
        }
        definition = {
            "task": spec.name,  # two alike tasks must not answer for each other
            "type": spec.type,
            "target": resolved.target if resolved.kind == "call" else spec.command,
            "image": spec.image,
            "env": spec.env,
            "parameters": parameters,
            "outputs": outputs,  # where destinations really are (mounts, working folder)
            "references": resolved.references,  # every upstream output it names, anywhere
        }
        fingerprint = code.fingerprint(resolved.target) if resolved.kind == "call" else None
        return cache_key(definition, prints, fingerprint), input_ids

    def _from_cache(
        self, task: PlannedTask, key: str, input_ids: dict[str, str], changes: Changes
    ) -> bool:
        """Answer ``task`` with the outputs of an earlier run's identical task, if any."""
        spec = task.spec
        if self.options.no_cache or not spec.cache:
            return False
        if self.cache is None:
            self.cache = self.store.cached_outputs(self.plan.name)
        entry = self.cache.get(key)
        if entry is None or set(entry[2]) != {o.name for o in spec.outputs}:
            return False
        for artifact in entry[2].values():
            found = files.fingerprint(artifact.uri)
            if found is None or found[0] != artifact.fingerprint:
                return False
        name = spec.name
        self._set(name, "cached")
        for output, artifact in entry[2].items():
            self._remember((name, output), artifact)
            changes.bindings.append(self._binding(name, "out", output, artifact.id))
        for input_name, artifact_id in input_ids.items():
            changes.bindings.append(self._binding(name, "in", input_name, artifact_id))
        now = time.time()
        changes.tasks.append(
            (name, {"state": "cached", "cache_key": key, "started_at": now, "finished_at": now})
        )
        changes.event(self.run_id, "task_cached", name, from_run=entry[0])
        return True

    def _input_artifact(self, source: str) -> ArtifactRecord:
        if source in self.by_uri:
            return self.by_uri[source]
        found = files.fingerprint(source)
        if found:
            digest, size = found
        elif "://" in source:  # a URL that says nothing of its content: never a cache hit
            digest, size = f"unknown-{secrets.token_hex(8)}", None
        else:
            digest, size = "missing", None
        artifact_id = self.store.external_artifact(source, digest, size, secrets.token_hex(8))
        return ArtifactRecord(
            artifact_id, None, None, None, "external", source, digest, size, time.time()
        )

    # ------------------------------------------------------------------ launching

    def _launch(self, task: PlannedTask, attempt: int) -> None:
        """Start an attempt that was claimed; a failure to start it fails the attempt."""
        name = task.name
        key, input_ids = self.prepared[name]
        running = _Running(name, attempt, self.requests[name], None, {}, {}, input_ids, key)
        self.running[(name, attempt)] = running
        self.used = self.used + running.request
        self._set(name, "running")
        try:
            work = self._work(task, attempt, running)
            self.executor.submit((name, attempt), work, running.request)
        except (StagewiseError, OSError) as exc:
            text = (
                exc.render() if isinstance(exc, StagewiseError) else f"{type(exc).__name__}: {exc}"
            )
            self.launch_failures.append(
                ((name, attempt), Outcome(False, error=f"the task could not be started: {text}"))
            )
            return
        if task.timeout:
            running.deadline = time.monotonic() + task.timeout

    def _work(self, task: PlannedTask, attempt: int, running: _Running) -> Work:
        name = task.name
        resolved = self.resolver.task(task)
        tag = f"{self.run_id}-a{attempt}"
        for output, final in resolved.outputs.items():
            if "://" in final:
                raise PipelineError(
                    f"output '{output}' of task '{name}' is a URL ({final}); outputs are "
                    "written to local or mounted paths",
                    hint="mount the URL's prefix on a local or shared folder (--mount)",
                )
            Path(final).parent.mkdir(parents=True, exist_ok=True)
            running.staging[output] = files.staging_path(final, tag)
            running.finals[output] = final
            files.remove(running.staging[output])
        log = str(self.folder / "logs" / f"{name}.{attempt}.log")
        staging, inputs = running.staging, resolved.inputs
        return Work(
            run_id=self.run_id,
            task=name,
            attempt=attempt,
            kind=resolved.kind,
            target=resolved.target,
            kwargs={**resolved.parameters, **inputs, **staging},
            env={
                **resolved.env,
                "STAGEWISE_RUN_ID": self.run_id,
                "STAGEWISE_TASK": name,
                "STAGEWISE_ATTEMPT": str(attempt),
                **{f"STAGEWISE_OUTPUT_{_env_name(o)}": p for o, p in staging.items()},
                **{f"STAGEWISE_INPUT_{_env_name(i)}": p for i, p in inputs.items()},
            },
            cwd=self.workdir,
            log=log,
            timeout=task.timeout or None,
            context={
                "run_id": self.run_id,
                "task": name,
                "attempt": attempt,
                "output_dir": str(self.folder),
                "inputs": inputs,
                "outputs": staging,
                "parameters": resolved.parameters,
                "image": task.spec.image,
            },
        )

    def _check_timeouts(self, now: float) -> None:
        for key, running in list(self.running.items()):
            if running.deadline is not None and now > running.deadline:
                timeout = self.plan.tasks[running.task].timeout
                running.deadline = None
                self.executor.cancel(
                    key, "timed_out", f"the attempt ran past its timeout of {timeout:g} s"
                )

    # ------------------------------------------------------------------ finishing

    def _finish(self, running: _Running, outcome: Outcome, changes: Changes) -> None:
        self.used = self.used - running.request
        name, attempt = running.task, running.attempt
        now = time.time()
        if outcome.ok:
            try:
                self._publish(running, changes)
            except StagewiseError as exc:
                outcome = Outcome(False, error=exc.render())
        if outcome.ok:
            self._set(name, "succeeded")
            changes.attempts.append((name, attempt, {"state": "succeeded", "finished_at": now}))
            changes.tasks.append(
                (
                    name,
                    {
                        "state": "succeeded",
                        "finished_at": now,
                        "cache_key": running.key,
                        "result": outcome.result,
                        "error": None,
                    },
                )
            )
            changes.event(
                self.run_id,
                "task_succeeded",
                name,
                attempt=attempt,
                seconds=round(outcome.seconds, 6),
            )
            return
        for staged in running.staging.values():
            files.remove(staged)
        state = (
            outcome.state
            if outcome.state in ("timed_out", "cancelled", "interrupted")
            else "failed"
        )
        changes.attempts.append(
            (name, attempt, {"state": state, "finished_at": now, "error": outcome.error})
        )
        if state in ("cancelled", "interrupted"):
            return
        failures = self.failures.get(name, 0) + 1
        self.failures[name] = failures
        task = self.plan.tasks[name]
        if failures <= task.spec.retries:
            delay = min(task.spec.retry_delay * 2 ** (failures - 1), task.spec.retry_max_delay)
            self._set(name, "retrying")
            self.not_before[name] = now + delay
            changes.tasks.append(
                (
                    name,
                    {
                        "state": "retrying",
                        "failures": failures,
                        "not_before": now + delay,
                        "error": outcome.error,
                    },
                )
            )
            changes.event(
                self.run_id,
                "task_retrying",
                name,
                attempt=attempt,
                delay=delay,
                error=_headline(outcome.error),
            )
        else:
            self._set(name, "failed")
            changes.tasks.append(
                (
                    name,
                    {
                        "state": "failed",
                        "failures": failures,
                        "finished_at": now,
                        "error": outcome.error,
                    },
                )
            )
            changes.event(
                self.run_id, "task_failed", name, attempt=attempt, error=_headline(outcome.error)
            )

    def _publish(self, running: _Running, changes: Changes) -> None:
        name = running.task
        task = self.plan.tasks[name]
        outputs = running.finals
        tag = f"{self.run_id}-a{running.attempt}"
        for output, staged in running.staging.items():
            final = outputs[output]
            if os.path.lexists(staged):
                files.publish(staged, final, tag)
            elif not os.path.lexists(final) or not self._adopting:
                raise PipelineError(
                    f"task '{name}' succeeded but did not write its output '{output}'",
                    location=staged,
                    hint=f"write the output to the path passed as '{output}' "
                    f"(or $STAGEWISE_OUTPUT_{_env_name(output)})",
                )
        kind = "model" if task.spec.type == "deployment" else "output"
        now = time.time()
        for output in running.staging:
            found = files.fingerprint(outputs[output])
            digest, size = found if found else ("missing", None)
            artifact = ArtifactRecord(
                secrets.token_hex(8),
                self.run_id,
                name,
                output,
                kind,
                outputs[output],
                digest,
                size,
                now,
            )
            self._remember((name, output), artifact)
            changes.artifacts.append(artifact.__dict__.copy())
            changes.bindings.append(self._binding(name, "out", output, artifact.id))
            if kind == "model":
                changes.event(
                    self.run_id, "model_deployed", name, artifact=artifact.id, uri=artifact.uri
                )
        for input_name, artifact_id in running.inputs.items():
            changes.bindings.append(self._binding(name, "in", input_name, artifact_id))

    _adopting = False

    def _binding(self, task: str, direction: str, name: str, artifact_id: str) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "task": task,
            "direction": direction,
            "name": name,
            "artifact_id": artifact_id,
        }

    # ------------------------------------------------------------------ resume

    def _recover(self) -> None:
        """At start: load the run's state, reopen a finished run, settle dead attempts."""
        changes = Changes()
        reopen = self.record.state != "running"
        if reopen:
            changes.run.update(
                state="running", finished_at=None, error=None, cancel_requested=False
            )
            changes.event(self.run_id, "run_resumed")
        records = self.store.tasks(self.run_id)  # tasks before artifacts: no success
        for key, artifact in self.store.artifacts_of(self.run_id).items():  # without its outputs
            self._remember(key, artifact)
        for record in records:
            name = record.name
            self.failures[name] = record.failures
            if record.not_before:
                self.not_before[name] = record.not_before
            if reopen and record.state in ("failed", "skipped", "cancelled"):
                # Resuming a finished run retries what did not succeed, from scratch.
                self.failures[name] = 0
                self._set(name, "pending")
                changes.tasks.append(
                    (name, {"state": "pending", "failures": 0, "error": None, "finished_at": None})
                )
            else:
                self._set(name, record.state)
        self._settle(records, changes)
        if changes:
            self.store.apply(self.run_id, self.runner_id, changes)

    def _settle(self, records: list[Any], changes: Changes) -> None:
        """Tasks held by runners that are gone: adopt a finished attempt, else run again."""
        alive = {
            rid
            for rid, info in self.store.runners(self.run_id).items()
            if runner_alive(info) and rid != self.runner_id
        }
        last = {a.task: a for a in self.store.attempts(self.run_id)}
        for record in records:
            name = record.name
            if record.state != "running" or any(r.task == name for r in self.running.values()):
                continue
            if record.runner_id in alive:
                self._set(name, "elsewhere")
                continue
            attempt = last.get(name)
            logs = self.folder / "logs"
            marker = attempt_log.read_result(logs, name, attempt.number) if attempt else None
            if attempt is not None and marker and marker.get("ok"):
                self._adopt(name, attempt.number, marker, changes)
                continue
            self._set(name, "pending")
            changes.tasks.append((name, {"state": "pending", "runner_id": None}))
            if attempt is None or attempt.state != "running":
                continue
            self._discard_staging(name, attempt.number)
            if attempt.log:
                attempt_log.salvage(logs, name, attempt.number, attempt.log)
            error = "interrupted: the runner stopped during this attempt"
            changes.attempts.append(
                (
                    name,
                    attempt.number,
                    {"state": "interrupted", "finished_at": time.time(), "error": error},
                )
            )
            changes.event(self.run_id, "task_interrupted", name, attempt=attempt.number)

    def _discard_staging(self, name: str, attempt: int) -> None:
        """Remove what an interrupted attempt had written under its temporary names."""
        with contextlib.suppress(StagewiseError):
            for final in self.resolver.task(self.plan.tasks[name]).outputs.values():
                files.remove(files.staging_path(final, f"{self.run_id}-a{attempt}"))

    def _adopt(self, name: str, attempt: int, marker: dict[str, Any], changes: Changes) -> None:
        """The attempt finished but its success was not recorded: keep its outputs."""
        task = self.plan.tasks[name]
        outputs = self.resolver.task(task).outputs
        tag = f"{self.run_id}-a{attempt}"
        staging = {o: files.staging_path(p, tag) for o, p in outputs.items()}
        key, input_ids = self.prepared.setdefault(name, self._cache_key(task))
        running = _Running(name, attempt, Request(0, 0, 0), None, staging, outputs, input_ids, key)
        self._adopting = True
        try:
            outcome = Outcome(True, result=marker.get("result"), state="succeeded")
            self._finish(running, outcome, changes)
        finally:
            self._adopting = False
        changes.event(self.run_id, "task_adopted", name, attempt=attempt)

    def _refresh(self) -> None:
        """See what other runners did: states of tasks we do not hold, and their outputs."""
        time.sleep(POLL_SECONDS)
        records = self.store.tasks(self.run_id)
        for key, artifact in self.store.artifacts_of(self.run_id).items():
            self._remember(key, artifact)
        for record in records:
            if any(r.task == record.name for r in self.running.values()):
                continue
            self._set(record.name, "elsewhere" if record.state == "running" else record.state)
            self.failures[record.name] = record.failures
            if record.not_before:
                self.not_before[record.name] = record.not_before
        changes = Changes()
        self._settle(records, changes)  # a runner that died meanwhile
        if changes:
            self.store.apply(self.run_id, self.runner_id, changes)

    def _waiting_on_others(self) -> bool:
        return bool(self.elsewhere)

    # ------------------------------------------------------------------ ending

    def _all_finished(self) -> bool:
        return not self.running and not self.unfinished

    def _set(self, name: str, state: str) -> None:
        self.states[name] = state
        self.elsewhere.discard(name)
        if state in FINISHED:
            self.unfinished.discard(name)
            self.candidates.discard(name)
            self.candidates.update(self.plan.downstream[name])
            return
        self.unfinished.add(name)
        if state in ("pending", "retrying"):
            self.candidates.add(name)
        else:
            self.candidates.discard(name)
            if state == "elsewhere":
                self.elsewhere.add(name)

    def _remember(self, key: tuple[str, str], artifact: ArtifactRecord) -> None:
        self.outputs[key] = artifact
        self.by_uri[artifact.uri] = artifact

    def _close(self) -> None:
        states = [self.states[n] for n in self.plan.tasks]
        failed = [n for n in self.plan.tasks if self.states[n] == "failed"]
        state = "succeeded" if all(s in DONE for s in states) else "failed"
        if any(s == "cancelled" for s in states) and not failed:
            state = "cancelled"
        changes = Changes()
        error = (
            f"task{'s' if len(failed) > 1 else ''} failed: {', '.join(failed)}" if failed else None
        )
        changes.finish = {
            "values": {"state": state, "finished_at": time.time(), "error": error},
            "event": {
                "run_id": self.run_id,
                "task": None,
                "time": time.time(),
                "event": f"run_{state}",
                "data": None,
            },
        }
        self.store.apply(self.run_id, self.runner_id, changes)
        changes.events.append(changes.finish["event"])
        self._notify(changes)

    def _cancel(self, changes: Changes) -> None:
        for key in list(self.running):
            self.executor.cancel(key, "cancelled", "the run was cancelled")
        for key, outcome in self.executor.wait(0):
            self._finish(self.running.pop(key), outcome, changes)
        now = time.time()
        for name in self.plan.tasks:
            if self.states.get(name) not in FINISHED:
                self._set(name, "cancelled")
                changes.tasks.append((name, {"state": "cancelled", "finished_at": now}))
                changes.event(self.run_id, "task_cancelled", name)
        changes.run.update(state="cancelled", finished_at=now, error="cancelled")
        changes.event(self.run_id, "run_cancelled")
        self.store.apply(self.run_id, self.runner_id, changes)
        self._notify(changes)

    def _interrupt(self) -> None:
        """Ctrl-C: stop what runs, leave the run resumable."""
        self.interrupted = True
        changes = Changes()
        for key in list(self.running):
            self.executor.cancel(key, "interrupted", "interrupted: Ctrl-C")
        for key, outcome in self.executor.wait(0):
            running = self.running.pop(key)
            self._finish(running, outcome, changes)
            self._set(running.task, "pending")
            changes.tasks.append((running.task, {"state": "pending", "runner_id": None}))
        changes.run.update(state="interrupted", error="interrupted (Ctrl-C); resume it")
        changes.event(self.run_id, "run_interrupted")
        self.store.apply(self.run_id, self.runner_id, changes)

    def _notify(self, changes: Changes) -> None:
        if self.listener is None:
            return
        for event in changes.events:
            self.listener(event["event"], event["task"] or "", event["data"] or {})


def _fit(request: Request, capacity: Request, fit: bool) -> Request:
    if not fit or request.fits(capacity):
        return request
    return Request(
        min(request.cpu, capacity.cpu),
        min(request.memory, capacity.memory),
        min(request.gpu, capacity.gpu),
    )


def _headline(error: str | None) -> str | None:
    if not error:
        return error
    # The last line that is not indented: a traceback's "ValueError: ..." line, not the
    # "  fix: ..." hint or a problem listed under a stagewise error.
    lines = [line for line in error.strip().splitlines() if line.strip() and not line[0].isspace()]
    return lines[-1] if lines else error.strip()


def _env_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).upper()
