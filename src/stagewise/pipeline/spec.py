"""What a pipeline is: read from seed 002's YAML, or built in Python; both give one model.

YAML::

    plan = load_pipeline("pipeline.yaml", ["learning_rate=3e-4"])

Python::

    @task(retries=2)
    def prepare(raw: Input, table: Output, rows: int = 100): ...

    @task(resources={"cpu": 2})
    def train(table: Input, model: Output, learning_rate: float = 0.1): ...

    pipeline = Pipeline("demo", parameters={"learning_rate": 0.1})
    prepared = pipeline.add(prepare, raw="data/raw.csv")
    pipeline.add(train, table=prepared.outputs.table, learning_rate="${parameters.learning_rate}")
    record = pipeline.run()

A function's parameters annotated :class:`Input` are its inputs (paths to read), those
annotated :class:`Output` its outputs (paths to write), the rest its parameters.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from stagewise.config.base import load_model, suggest, unknown_key_warnings
from stagewise.config.loading import Document, read_document
from stagewise.config.pipeline import PipelineFile, TaskSpec
from stagewise.errors import ConfigError, PipelineError, Problem
from stagewise.pipeline import tasks as task_types
from stagewise.pipeline.plan import Plan, plan


class Input(str):
    """Annotation: this argument is a path the task reads."""


class Output(str):
    """Annotation: this argument is a path the task writes (a temporary name, published
    under the output's final name when the task succeeds)."""


@dataclass
class LoadedPipeline:
    plan: Plan
    warnings: list[Problem] = field(default_factory=list)


def load_pipeline(path: str | Path, overrides: Sequence[str] = ()) -> LoadedPipeline:
    """Read, override and check a pipeline file; one error lists every problem."""
    source = str(path)
    doc = read_document(path, "pipeline file", PipelineError)
    if overrides:
        doc = Document(apply_pipeline_overrides(doc.data, overrides, source), source, doc.lines)
    _anchor_function_files(doc.data, Path(path).resolve().parent)
    pipeline = load_model(PipelineFile, doc, what="pipeline")
    warnings = unknown_key_warnings(pipeline, doc)
    return LoadedPipeline(plan(pipeline, doc, check_type=task_types.check), warnings)


def _anchor_function_files(data: Any, folder: Path) -> None:
    """``function: tasks.py:warmup`` names a file beside the pipeline file (as
    docker-compose paths do), so the pipeline runs from any folder."""
    spec = data.get("spec") if isinstance(data, dict) else None
    for item in spec.get("tasks") or [] if isinstance(spec, dict) else []:
        function = item.get("function") if isinstance(item, dict) else None
        if isinstance(function, str) and ".py:" in function:
            file, _, name = function.rpartition(":")
            if not Path(file).is_absolute() and (folder / file).is_file():
                item["function"] = f"{folder / file}:{name}"


def apply_pipeline_overrides(data: Any, overrides: Sequence[str], source: str) -> Any:
    """``NAME=VALUE`` sets ``spec.parameters.NAME``; ``tasks.TASK.KEY=VALUE`` a task's key."""
    from stagewise.config.overrides import Override, apply_overrides, parse_overrides

    parsed = parse_overrides(overrides)
    if not isinstance(data, dict) or not isinstance(data.get("spec"), dict):
        raise ConfigError("overrides need a pipeline with a 'spec:' mapping", location=source)
    spec = dict(data["spec"])
    parameters = [o for o in parsed if o.path[0] != "tasks"]
    if parameters:
        spec["parameters"] = apply_overrides(
            spec.get("parameters") or {}, parameters, what=f"the parameters of {source}"
        )
    task_list = list(spec.get("tasks") or [])
    names = [t.get("name") if isinstance(t, dict) else None for t in task_list]
    for override in (o for o in parsed if o.path[0] == "tasks"):
        target = override.path[1] if len(override.path) > 2 else None
        if target not in names:
            near = suggest(str(target), [n for n in names if n])
            raise ConfigError(
                f"Could not override '{override.text}': there is no task {target!r}",
                location=source,
                hint=f"did you mean 'tasks.{near}...'?" if near else "use tasks.TASK.KEY=VALUE",
            )
        index = names.index(target)
        kind = override.kind
        if kind == "set" and len(override.path) == 3 and override.path[2] in TaskSpec.model_fields:
            kind = "force"  # a declared key with its default is there, as in a structured config
        inner = Override(kind, override.path[2:], override.value, override.text)
        task_list[index] = apply_overrides(task_list[index], [inner], what=f"task {target!r}")
    spec["tasks"] = task_list
    return {**data, "spec": spec}


# ---------------------------------------------------------------------------- the SDK


def task(
    function: Callable[..., Any] | None = None,
    *,
    type: str = "python",
    resources: dict[str, Any] | None = None,
    retries: int = 0,
    retry_delay: float = 1.0,
    timeout: float | str | None = None,
    cache: bool = True,
    image: str | None = None,
) -> Any:
    """Mark a function as a pipeline task; it stays callable as a plain function."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__stagewise_task__ = {  # type: ignore[attr-defined]
            "type": type,
            "resources": resources or {},
            "retries": retries,
            "retry_delay": retry_delay,
            "timeout": timeout,
            "cache": cache,
            "image": image,
        }
        return fn

    return mark(function) if function is not None else mark


@dataclass(frozen=True)
class OutputRef:
    task: str
    name: str

    def __str__(self) -> str:
        return f"${{tasks.{self.task}.outputs.{self.name}}}"


class _Outputs:
    def __init__(self, task: str, names: list[str]) -> None:
        self._task, self._names = task, names

    def __getattr__(self, name: str) -> OutputRef:
        return self[name]

    def __getitem__(self, name: str) -> OutputRef:
        if name not in self._names:
            raise PipelineError(
                f"task '{self._task}' has no output '{name}'",
                hint=f"its outputs are: {', '.join(self._names) or 'none'}",
            )
        return OutputRef(self._task, name)


@dataclass
class TaskHandle:
    name: str
    outputs: _Outputs


class Pipeline:
    """Builds a pipeline in Python; ``spec()`` is the same model a YAML file gives."""

    def __init__(
        self, name: str, *, version: str | None = None, parameters: dict[str, Any] | None = None
    ) -> None:
        self.name = name
        self.version = version
        self.parameters = dict(parameters or {})
        self._tasks: list[dict[str, Any]] = []
        self._dependencies: list[dict[str, str]] = []

    def add(
        self,
        function: Callable[..., Any],
        name: str | None = None,
        *,
        after: Sequence[TaskHandle | str] = (),
        **bindings: Any,
    ) -> TaskHandle:
        """Add ``function`` as a task: keyword arguments bind its inputs (paths or another
        task's ``.outputs.NAME``), its outputs (a destination, optional) and parameters."""
        options = dict(getattr(function, "__stagewise_task__", {"type": "python"}))
        name = name or function.__name__.replace("_", "-")
        hints = _hints(function)
        inputs = [p for p, h in hints.items() if h is Input]
        outputs = [p for p, h in hints.items() if h is Output]
        unknown = [k for k in bindings if k not in inspect.signature(function).parameters]
        if unknown:
            raise PipelineError(
                f"task '{name}': {function.__name__}() takes no argument {unknown[0]!r}",
                hint=f"its arguments are: {', '.join(inspect.signature(function).parameters)}",
            )
        missing = [i for i in inputs if i not in bindings]
        if missing:
            raise PipelineError(
                f"task '{name}': input {missing[0]!r} is not bound",
                hint=f"pass {missing[0]}=PATH or {missing[0]}=other.outputs.NAME to add()",
            )
        spec: dict[str, Any] = {
            "name": name,
            **{k: v for k, v in options.items() if v not in (None, {}) or k == "cache"},
            "function": _target(function),
            "inputs": [{"name": i, "source": str(bindings[i])} for i in inputs],
            "outputs": [
                {"name": o, **({"destination": str(bindings[o])} if o in bindings else {})}
                for o in outputs
            ],
            "parameters": {
                k: str(v) if isinstance(v, OutputRef) else v
                for k, v in bindings.items()
                if k not in inputs and k not in outputs
            },
        }
        self._tasks.append(spec)
        for before in after:
            self._dependencies.append(
                {"from": before if isinstance(before, str) else before.name, "to": name}
            )
        return TaskHandle(name, _Outputs(name, outputs))

    def spec(self) -> PipelineFile:
        data = {
            "apiVersion": "stagewise/v1",
            "kind": "Pipeline",
            "metadata": {"name": self.name, **({"version": self.version} if self.version else {})},
            "spec": {
                "tasks": self._tasks,
                "dependencies": self._dependencies,
                "parameters": self.parameters,
            },
        }
        return load_model(PipelineFile, Document(data, f"pipeline {self.name}"), what="pipeline")

    def plan(self) -> Plan:
        return plan(self.spec(), check_type=task_types.check)

    def run(self, **kwargs: Any) -> Any:
        """Run to the end (keyword arguments as :func:`stagewise.pipeline.runner.run_pipeline`)."""
        from stagewise.pipeline.runner import run_pipeline

        return run_pipeline(self.plan(), **kwargs)


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return get_type_hints(function)
    except Exception:  # an annotation that does not resolve: no typed inputs/outputs
        return {}


def _target(function: Callable[..., Any]) -> str:
    module = function.__module__
    if module == "__main__":
        main = getattr(sys.modules["__main__"], "__file__", None)
        if main is None:
            raise PipelineError(
                f"{function.__name__} is defined in an interactive session; workers cannot import it",
                hint="put task functions in a module or a .py file",
            )
        return f"{Path(main).resolve()}:{function.__qualname__}"
    return f"{module}:{function.__qualname__}"
