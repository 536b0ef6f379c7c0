"""The task types: what runs for a task of each ``type``.

``python`` calls a function, ``shell`` runs a command line. The seed's types
(``data_processing``, ``training``, ``evaluation``, ``deployment``) call your ``function``
when the task names one, and stagewise's own implementation when it does not.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass

from stagewise.config.base import suggest
from stagewise.config.pipeline import TaskSpec
from stagewise.pipeline import code


@dataclass(frozen=True)
class TaskType:
    name: str
    description: str
    builtin: str | None = None  # the function that runs when the task names none


TYPES: dict[str, TaskType] = {
    t.name: t
    for t in (
        TaskType("python", "calls 'function' with its parameters, inputs and outputs"),
        TaskType("shell", "runs 'command' with /bin/sh; ${...} values are shell-quoted"),
        TaskType(
            "data_processing",
            "your function, or stagewise's: every table in the inputs into one sample store",
            "stagewise.pipeline.tasks.data:prepare",
        ),
        TaskType(
            "training",
            "your function; or with a 'config' parameter, stagewise's multi-dataset trainer; "
            "else the built-in linear classifier",
            "stagewise.pipeline.tasks.training:train",
        ),
        TaskType(
            "evaluation",
            "your function; or with a 'config' parameter, the trainer's full evaluation of "
            "the 'model' input; else the linear classifier's evaluation",
            "stagewise.pipeline.tasks.training:evaluate",
        ),
        TaskType(
            "deployment",
            "publishes the model input as the output and records it as a model in the "
            "metadata database",
            "stagewise.pipeline.tasks.deploy:deploy",
        ),
    )
}


def check(task: TaskSpec) -> list[str]:
    """What is wrong with ``task`` for its type (an empty list when nothing)."""
    found = TYPES.get(task.type)
    if found is None:
        near = suggest(task.type, list(TYPES))
        return [
            f"unknown task type '{task.type}' in task '{task.name}'"
            + (f" (did you mean '{near}'?)" if near else "")
            + f"; types are: {', '.join(TYPES)}"
        ]
    problems: list[str] = []
    if task.type == "shell":
        if not task.command:
            problems.append(f"shell task '{task.name}' needs a 'command'")
    elif task.command:
        problems.append(f"task '{task.name}' has a 'command' but is not a shell task (type: shell)")
    if task.type != "shell":
        function = task.function or found.builtin
        if not function:
            problems.append(
                f"python task '{task.name}' needs a 'function' such as 'package.module:name'"
            )
        elif ":" not in function or not function.rpartition(":")[2]:
            problems.append(
                f"'function: {function}' in task '{task.name}' must look like "
                "'package.module:function' or 'path/to/file.py:function'"
            )
        elif why := code.problem(function):
            problems.append(f"task '{task.name}': {why} (function: {function})")
    return problems


def target(task: TaskSpec, replace: Callable[[str, bool], str] | None = None) -> tuple[str, str]:
    """(kind, target) for the worker: ("shell", command) or ("call", "module:function").

    ``replace(text, shell)`` fills in references to other tasks' outputs (quoted for the
    shell when ``shell``); a command given as a list is filled in item by item, then
    joined with each item quoted.
    """
    if task.type == "shell":
        command = task.command
        if isinstance(command, str):
            return "shell", replace(command, True) if replace else command
        items = [str(c) for c in command or []]
        return "shell", " ".join(shlex.quote(replace(c, False) if replace else c) for c in items)
    return "call", task.function or TYPES[task.type].builtin or ""
