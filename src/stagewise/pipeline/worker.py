"""Runs one task attempt inside a worker (a local worker process or a Ray task).

The attempt's stdout and stderr, including those of child processes, go to its log file.
User code runs inside an error boundary: a failure comes back as text holding the user's
own traceback. Output and results go through ``attempt_log``: on success the worker
journals the attempt's end, so that a runner killed before it could record the success
finds it on resume and keeps the attempt's outputs instead of running the task again.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stagewise.pipeline import attempt_log

_functions: dict[str, Callable[..., Any]] = {}
_child: subprocess.Popen[bytes] | None = None


@dataclass
class Work:
    """One attempt of one task, as the worker needs it (picklable, no database)."""

    run_id: str
    task: str
    attempt: int
    kind: str  # "call" (a Python function) or "shell"
    target: str  # "module:function", "path/file.py:function", or a command line
    kwargs: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    log: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    # The task's timeout: a shell command is stopped by the worker itself at this point, so
    # that it never outlives its timeout however slowly an executor kills the worker.
    timeout: float | None = None


@dataclass
class Outcome:
    ok: bool
    result: Any = None
    error: str | None = None
    seconds: float = 0.0
    state: str = "failed"  # on failure: failed, timed_out, cancelled, interrupted


def execute(work: Work) -> Outcome:
    """Run ``work`` and report; never raises for a failure of the task itself."""
    start = time.perf_counter()
    capture = (
        attempt_log.captured(work.log, work.task, work.attempt)
        if work.log
        else contextlib.nullcontext()
    )
    try:
        with capture, _environment(work.env), _working_dir(work.cwd):
            result = _jsonable(_shell(work) if work.kind == "shell" else _call(work))
        if work.log:
            attempt_log.finish(work.log, work.task, work.attempt, ok=True, result=result)
        return Outcome(True, result=result, seconds=time.perf_counter() - start, state="succeeded")
    except BaseException as exc:  # the error boundary: user code may raise anything
        if isinstance(exc, KeyboardInterrupt | SystemExit) and not isinstance(exc, _TaskExit):
            text = f"{type(exc).__name__}: the task tried to exit the worker ({exc})"
        else:
            text = _user_traceback(exc)
        if work.log:
            with contextlib.suppress(OSError):
                attempt_log.finish(work.log, work.task, work.attempt, ok=False, error=text)
        state = exc.state if isinstance(exc, _TaskExit) else "failed"
        return Outcome(False, error=text, seconds=time.perf_counter() - start, state=state)


class _TaskExit(Exception):
    def __init__(self, message: str, state: str = "failed") -> None:
        super().__init__(message)
        self.state = state


def load_function(target: str) -> Callable[..., Any]:
    """``package.module:function`` or ``path/to/file.py:function`` (cached per process)."""
    found = _functions.get(target)
    if found is not None:
        return found
    module_name, _, attribute = target.rpartition(":")
    if module_name.endswith(".py"):
        path = Path(module_name).resolve()
        spec = importlib.util.spec_from_file_location(f"stagewise_task_{abs(hash(path))}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    obj: Any = module
    for part in attribute.split("."):
        obj = getattr(obj, part)
    obj = getattr(obj, "__stagewise_function__", obj)  # a @task wrapper: the plain function
    _functions[target] = obj
    return obj


def _call(work: Work) -> Any:
    function = load_function(work.target)
    arguments = dict(work.kwargs)
    if "context" in _parameters(function):
        arguments["context"] = work.context
    return function(**_accepted(function, arguments))


def _parameters(function: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return {}


def _accepted(function: Callable[..., Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments ``function`` takes: all of them if it has ``**kwargs``."""
    parameters = _parameters(function)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return arguments
    return {k: v for k, v in arguments.items() if k in parameters}


# The command runs in a background subshell of a guard shell, in a session of its own.
# Two things stop the whole group (every grandchild included) when the worker goes away:
# - the guard's TERM trap, which PDEATHSIG fires when the worker dies;
# - a watchdog that reads the guard's stdin, a pipe whose only writer is the worker: EOF
#   means the worker is gone. This one holds even when the guard itself is SIGKILLed,
#   which Ray does to a dead worker's direct children.
# (A background list's stdin is /dev/null, hence the pipe's copy on fd 3.)
_GUARD = """trap 'trap - TERM; kill -TERM 0 2>/dev/null' TERM
exec 3<&0 </dev/null
( read _ignored <&3; kill -KILL 0 ) &
watchdog=$!
( {command}
) 3<&- &
wait $!; code=$?
kill -KILL $watchdog 2>/dev/null
exit $code"""


def _shell(work: Work) -> Any:
    global _child
    env = {**os.environ, **work.env}
    alive_read, alive_write = os.pipe()
    try:
        _child = subprocess.Popen(
            ["/bin/sh", "-c", _GUARD.format(command=work.target)],
            stdin=alive_read,  # stdout and stderr: the worker's, the attempt's capture
            cwd=work.cwd,
            env=env,
            start_new_session=True,  # the command's processes form one group to stop
            preexec_fn=_terminate_with_parent,
        )
        os.close(alive_read)
        try:
            code = _child.wait(timeout=work.timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(_child.pid, signal.SIGKILL)
            _child.wait()
            raise _TaskExit(
                f"the attempt ran past its timeout of {work.timeout:g} s: {work.target}",
                state="timed_out",
            ) from None
        if code < 0:  # the shell was killed outright: stop what it started
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(_child.pid, signal.SIGKILL)
    finally:
        _child = None
        os.close(alive_write)
        with contextlib.suppress(OSError):
            os.close(alive_read)
    if code != 0:
        raise _TaskExit(f"the command exited with status {code}: {work.target}")
    return {"exit_code": 0}


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_prctl = _load_prctl()  # looked up before any fork: the child only makes the call


def _terminate_with_parent() -> None:
    """In the shell's process, before exec: SIGTERM it when the worker dies (killed by a
    timeout, a cancel, Ray, or the runner's own death), so its guard stops the group. (Linux
    ties this to the forking thread: tasks run on the worker's main thread.)"""
    if _prctl is not None:
        _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _user_traceback(exc: BaseException) -> str:
    """The traceback from the first frame outside stagewise's own worker code."""
    if isinstance(exc, _TaskExit):
        return f"{exc}\n"
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


@contextlib.contextmanager
def _working_dir(folder: str | None) -> Iterator[None]:
    """Run in the run's working folder, with it importable (as ``python`` run there)."""
    if not folder or folder == os.getcwd():
        yield
        return
    if folder not in sys.path:
        sys.path.append(folder)
    saved = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(saved)


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    if not env:
        yield
        return
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def stop_child(signum: int, _frame: Any) -> None:
    """SIGTERM in a worker: stop a running shell command's process group, then exit."""
    if _child is not None and _child.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(_child.pid, signal.SIGKILL)
    os._exit(128 + signum)
