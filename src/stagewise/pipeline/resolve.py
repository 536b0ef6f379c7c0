"""A task as it will run: its references to other tasks' outputs and its mounts resolved.

Parameter references (``${parameters.x}``) were resolved when the pipeline was planned;
what is left are ``${tasks.T.outputs.O}``, known only once T has finished (or was answered
from the cache). They are replaced everywhere a task can hold them: parameters, inputs,
output destinations, env, and the command of a shell task, where each path is
shell-quoted exactly once. Any other ``${...}`` text (a parameter value that happens to
hold one) is left as it is.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stagewise.errors import PipelineError
from stagewise.pipeline import tasks as task_types
from stagewise.pipeline.plan import Plan, PlannedTask
from stagewise.store.runs import ArtifactRecord

TASK_REFERENCE = re.compile(r"\$\{\s*tasks\.([A-Za-z0-9_.\-]+?)\.outputs\.([A-Za-z0-9_.\-]+)\s*\}")


@dataclass
class Resolved:
    parameters: dict[str, Any]
    inputs: dict[str, str]  # name -> path or URL
    outputs: dict[str, str]  # name -> final path
    env: dict[str, str]
    kind: str  # "call" or "shell"
    target: str  # "module:function", or the command line
    references: dict[str, str]  # "T.O" -> fingerprint, of every task output it refers to


class Resolver:
    def __init__(
        self,
        planned: Plan,
        *,
        folder: Path,
        workdir: str,
        mounts: dict[str, str],
        outputs: dict[tuple[str, str], ArtifactRecord],
    ) -> None:
        self.plan = planned
        self.folder = folder
        self.workdir = workdir
        self.mounts = mounts
        self.outputs = outputs  # the runner's own map, filled as tasks finish

    def task(self, task: PlannedTask) -> Resolved:
        """``task`` resolved; PipelineError if an output it refers to is not known."""
        spec = task.spec
        seen: dict[str, str] = {}

        def lookup(upstream: str, output: str) -> str:
            artifact = self.outputs.get((upstream, output))
            if artifact is None:
                raise PipelineError(
                    f"task '{spec.name}' refers to {upstream}.outputs.{output}, which no "
                    "finished task has written",
                    hint=f"check that '{upstream}' declares the output '{output}'",
                )
            seen[f"{upstream}.{output}"] = artifact.fingerprint
            return artifact.uri

        parameters = {**self.plan.pipeline.spec.parameters, **_replace(spec.parameters, lookup)}
        inputs = {i.name: self.mount(_replace(i.source, lookup)) for i in spec.inputs}
        outputs = {
            o.name: self.mount(_replace(o.destination, lookup))
            if o.destination
            else str(self.folder / spec.name / o.name)
            for o in spec.outputs
        }
        env = {k: str(v) for k, v in _replace(dict(spec.env), lookup).items()}
        kind, target = task_types.target(
            spec, lambda text, shell: _replace(text, lookup, shell=shell)
        )
        return Resolved(parameters, inputs, outputs, env, kind, target, seen)

    def mount(self, path: str) -> str:
        """``path`` with a mounted prefix replaced; a local path made absolute against the
        run's working folder (workers on Ray run in other folders)."""
        for prefix, target in self.mounts.items():
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                rest = path[len(prefix) :].lstrip("/")
                base = os.path.normpath(os.path.join(self.workdir, target))
                path = os.path.normpath(os.path.join(base, rest))
                if path != base and not path.startswith(base.rstrip("/") + "/"):
                    raise PipelineError(
                        f"'{prefix}/{rest}' leaves the folder mounted at {prefix}",
                        hint="remove '..' from the path",
                    )
                return path
        if "://" in path:
            return path
        return os.path.normpath(os.path.join(self.workdir, path))


def _replace(value: Any, lookup: Callable[[str, str], str], *, shell: bool = False) -> Any:
    if isinstance(value, dict):
        return {k: _replace(v, lookup, shell=shell) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, lookup, shell=shell) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value

    def one(match: re.Match[str]) -> str:
        path = lookup(match.group(1), match.group(2))
        return shlex.quote(path) if shell else path

    return TASK_REFERENCE.sub(one, value)
