"""Checks a pipeline before anything runs, and orders its tasks.

Every problem is collected and reported at once, each with its YAML line: duplicate or
unknown names, unknown task types, references to undefined parameters or outputs, outputs
written by two tasks, impossible resources, and cycles (printed as a path, with where
each edge comes from: a declared dependency or an output wired to an input).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from stagewise.config.base import suggest
from stagewise.config.loading import Document, KeyPath
from stagewise.config.pipeline import PipelineFile, TaskSpec, duration_seconds
from stagewise.errors import PipelineError, Problem
from stagewise.pipeline.resources import Request, parse_request

REFERENCE = re.compile(r"\$\{([^}]*)\}")
_PARAMETER = re.compile(r"^parameters\.([A-Za-z0-9_.\-\[\]]+)$")
_TASK_PLACEHOLDER = re.compile(r"\$\{tasks\.[A-Za-z0-9_.\-]+?\.outputs\.[A-Za-z0-9_.\-]+\}")
_TASK_OUTPUT = re.compile(r"^tasks\.([A-Za-z0-9_.\-]+?)\.outputs\.([A-Za-z0-9_.\-]+)$")


@dataclass
class PlannedTask:
    """A checked task: its spec with ``${parameters...}`` resolved, and its place in the DAG."""

    spec: TaskSpec
    request: Request
    upstream: tuple[str, ...]
    timeout: float | None
    position: int

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class Plan:
    pipeline: PipelineFile
    tasks: dict[str, PlannedTask]  # in a topological order
    source: str | None = None
    downstream: dict[str, list[str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.pipeline.metadata.name


def plan(
    pipeline: PipelineFile,
    doc: Document | None = None,
    *,
    check_type: Callable[[TaskSpec], list[str]] | None = None,
) -> Plan:
    """Check ``pipeline`` and return its tasks in order, or raise one PipelineError."""
    checker = _Checker(pipeline, doc)
    resolved = checker.resolve_parameters()
    tasks = resolved.spec.tasks
    checker.check_names(tasks)
    requests = checker.check_tasks(tasks, check_type)
    edges = checker.edges(resolved)
    order = checker.order(list(dict.fromkeys(t.name for t in tasks)), edges)
    if checker.problems:
        count = len(checker.problems)
        raise PipelineError(
            f"{count} problem{'s' if count != 1 else ''} in pipeline '{pipeline.metadata.name}'",
            location=checker.source,
            problems=checker.problems,
        )
    by_name = {t.name: t for t in tasks}
    upstream: dict[str, list[str]] = {name: [] for name in by_name}
    downstream: dict[str, list[str]] = {name: [] for name in by_name}
    for (before, after), _why in edges.items():
        upstream[after].append(before)
        downstream[before].append(after)
    rank = {name: i for i, name in enumerate(order)}
    planned = {
        name: PlannedTask(
            spec=by_name[name],
            request=requests[name],
            upstream=tuple(sorted(upstream[name], key=rank.__getitem__)),
            timeout=duration_seconds(by_name[name].timeout)
            if by_name[name].timeout is not None
            else None,
            position=i,
        )
        for i, name in enumerate(order)
    }
    return Plan(pipeline=resolved, tasks=planned, source=checker.source, downstream=downstream)


def task_references(value: Any) -> Iterator[tuple[str, str]]:
    """Every ``${tasks.T.outputs.O}`` in ``value`` (strings, lists and dicts) as (T, O)."""
    for text in _strings(value):
        for match in REFERENCE.finditer(text):
            found = _TASK_OUTPUT.match(match.group(1).strip())
            if found:
                yield found.group(1), found.group(2)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def lookup(data: Any, dotted: str) -> Any:
    """``a.b[0].c`` in nested dicts and lists; KeyError if it is not there."""
    current = data
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", dotted):
        if part.startswith("["):
            index = int(part[1:-1])
            if not isinstance(current, list) or index >= len(current):
                raise KeyError(dotted)
            current = current[index]
        elif isinstance(current, dict) and part in current:
            current = current[part]
        else:
            raise KeyError(dotted)
    return current


def substitute(
    value: Any, resolve: Callable[[str], Any], *, quote: Callable[[str], str] | None = None
) -> Any:
    """Replace ``${...}`` in every string of ``value``. A string that is one reference keeps
    the referenced value's type; a reference inside text becomes text (quoted by ``quote``)."""
    if isinstance(value, dict):
        return {k: substitute(v, resolve, quote=quote) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, resolve, quote=quote) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = REFERENCE.fullmatch(value)
    if whole and quote is None:
        return resolve(whole.group(1).strip())

    def one(match: re.Match[str]) -> str:
        found = resolve(match.group(1).strip())
        text = found if isinstance(found, str) else _scalar_text(found)
        return quote(text) if quote else text

    return REFERENCE.sub(one, value)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Checker:
    def __init__(self, pipeline: PipelineFile, doc: Document | None) -> None:
        self.pipeline = pipeline
        self.doc = doc
        self.source = doc.source if doc else f"pipeline {pipeline.metadata.name}"
        self.problems: list[Problem] = []

    def line(self, path: KeyPath) -> int | None:
        return self.doc.line_of(path) if self.doc else None

    def add(self, message: str, path: KeyPath, hint: str | None = None) -> None:
        key = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path).replace(".[", "[")
        self.problems.append(
            Problem(message, file=self.source, line=self.line(path), key=key or None, hint=hint)
        )

    def resolve_parameters(self) -> PipelineFile:
        parameters = self.pipeline.spec.parameters
        data = self.pipeline.to_data()
        tasks_data = data["spec"]["tasks"]
        for i, task_data in enumerate(tasks_data):
            for key in list(task_data):
                if key in ("name", "type"):
                    continue
                # A command line gets its values shell-quoted; a command list is quoted
                # item by item when it is joined.
                quote = (
                    _quote_value if key == "command" and isinstance(task_data[key], str) else None
                )

                def resolve(ref: str, i: int = i, key: str = key) -> Any:
                    return self._resolve_ref(ref, parameters, ("spec", "tasks", i, key))

                task_data[key] = substitute(task_data[key], resolve, quote=quote)
        return PipelineFile.model_validate(data)

    def _resolve_ref(self, ref: str, parameters: dict[str, Any], path: KeyPath) -> Any:
        match = _PARAMETER.match(ref)
        if match:
            try:
                return lookup(parameters, match.group(1))
            except KeyError:
                near = suggest(match.group(1), list(parameters))
                self.add(
                    f"${{{ref}}} refers to a parameter that is not defined",
                    path,
                    f"define '{match.group(1)}' under spec.parameters"
                    + (f" (did you mean '{near}'?)" if near else "")
                    + f", or set it on the command line: +{match.group(1)}=VALUE",
                )
                return ""
        if _TASK_OUTPUT.match(ref):
            return "${" + ref + "}"  # resolved when the task is launched
        self.add(
            f"${{{ref}}} is not a reference stagewise knows",
            path,
            "use ${parameters.NAME} or ${tasks.TASK.outputs.NAME}",
        )
        return ""

    def check_names(self, tasks: list[TaskSpec]) -> None:
        seen: dict[str, int] = {}
        for i, task in enumerate(tasks):
            if task.name in seen:
                self.add(
                    f"task name '{task.name}' is used twice (first at task {seen[task.name] + 1})",
                    ("spec", "tasks", i, "name"),
                    "give every task its own name",
                )
            seen.setdefault(task.name, i)
            names = [o.name for o in task.outputs]
            for j, output in enumerate(task.outputs):
                if names.count(output.name) > 1 and names.index(output.name) != j:
                    self.add(
                        f"output '{output.name}' is declared twice in task '{task.name}'",
                        ("spec", "tasks", i, "outputs", j, "name"),
                    )

    def check_tasks(
        self, tasks: list[TaskSpec], check_type: Callable[[TaskSpec], list[str]] | None
    ) -> dict[str, Request]:
        requests: dict[str, Request] = {}
        outputs = {t.name: {o.name for o in t.outputs} for t in tasks}
        writers: dict[str, str] = {}
        for i, task in enumerate(tasks):
            where: KeyPath = ("spec", "tasks", i)
            try:
                requests[task.name] = parse_request(task.resources)
            except ValueError as exc:
                self.add(
                    str(exc),
                    (*where, "resources"),
                    "cpu: 2 or '500m'; memory: '4Gi'; gpu: 0, 1 or 0.5 (docs/formats/pipeline.md)",
                )
            for message in check_type(task) if check_type else []:
                self.add(message, (*where, "type"))
            for upstream, output in task_references(task.to_data()):
                if upstream not in outputs:
                    near = suggest(upstream, list(outputs))
                    self.add(
                        f"${{tasks.{upstream}.outputs.{output}}} names a task that does not exist",
                        where,
                        f"did you mean '{near}'?" if near else "check the task's name",
                    )
                elif output not in outputs[upstream]:
                    self.add(
                        f"task '{upstream}' has no output '{output}'",
                        where,
                        f"its outputs are: {', '.join(sorted(outputs[upstream])) or 'none'}",
                    )
            for j, out in enumerate(task.outputs):
                if out.destination and "${" not in out.destination:
                    key = _normal(out.destination)
                    if key in writers:
                        self.add(
                            f"'{out.destination}' is written by two tasks: '{writers[key]}' and '{task.name}'",
                            (*where, "outputs", j, "destination"),
                            "give each output its own destination",
                        )
                    writers.setdefault(key, task.name)
        return requests

    def edges(self, pipeline: PipelineFile) -> dict[tuple[str, str], str]:
        """(before, after) -> why, from declared dependencies and from wiring."""
        tasks = pipeline.spec.tasks
        names = [t.name for t in tasks]
        found: dict[tuple[str, str], str] = {}
        for k, dep in enumerate(pipeline.spec.dependencies):
            ok = True
            for end, value in (("from", dep.from_), ("to", dep.to)):
                if value not in names:
                    near = suggest(value, names)
                    self.add(
                        f"dependency {end} '{value}': there is no task of that name",
                        ("spec", "dependencies", k, end),
                        f"did you mean '{near}'?"
                        if near
                        else f"tasks are: {', '.join(dict.fromkeys(names))}",
                    )
                    ok = False
            if ok and dep.from_ == dep.to:
                self.add(f"task '{dep.to}' depends on itself", ("spec", "dependencies", k))
            elif ok:
                line = self.line(("spec", "dependencies", k))
                found.setdefault(
                    (dep.from_, dep.to), f"declared (line {line})" if line else "declared"
                )
        destinations = {
            _normal(o.destination): (t.name, o.name)
            for t in tasks
            for o in t.outputs
            if o.destination and "${" not in o.destination
        }
        for task in tasks:
            for upstream, output in task_references(task.to_data()):
                if upstream in names and upstream != task.name:
                    found.setdefault(
                        (upstream, task.name), f"'{task.name}' reads {upstream}.outputs.{output}"
                    )
            for inp in task.inputs:
                writer = _writer_of(inp.source, destinations)
                if writer and writer[0] != task.name:
                    found.setdefault(
                        (writer[0], task.name),
                        f"'{task.name}' input '{inp.name}' reads {writer[0]}.outputs.{writer[1]}",
                    )
        return found

    def order(self, names: list[str], edges: dict[tuple[str, str], str]) -> list[str]:
        """Kahn's order keeping the file's order among ready tasks; reports one cycle."""
        indegree = {n: 0 for n in names}
        after: dict[str, list[str]] = {n: [] for n in names}
        for before, later in edges:
            indegree[later] += 1
            after[before].append(later)
        ready = [n for n in names if indegree[n] == 0]
        order: list[str] = []
        while ready:
            node = ready.pop(0)
            order.append(node)
            for nxt in after[node]:
                indegree[nxt] -= 1
                if indegree[nxt] == 0:
                    ready.append(nxt)
        if len(order) < len(names):
            cycle = _find_cycle([n for n in names if n not in order], after)
            path = " -> ".join([*cycle, cycle[0]])
            whys = [edges[(a, b)] for a, b in zip(cycle, [*cycle[1:], cycle[0]], strict=True)]
            mixed = any(w.startswith("declared") for w in whys) and not all(
                w.startswith("declared") for w in whys
            )
            headline = (
                "the declared dependencies contradict the wiring of outputs to inputs"
                if mixed
                else "the tasks form a cycle"
            )
            detail = "; ".join(
                f"{a} -> {b}: {w}"
                for (a, b), w in zip(
                    zip(cycle, [*cycle[1:], cycle[0]], strict=True), whys, strict=True
                )
            )
            self.add(
                f"{headline}: {path} ({detail})",
                ("spec", "dependencies") if self.pipeline.spec.dependencies else ("spec", "tasks"),
                "remove one of these edges so that the tasks can run in an order",
            )
        return order


def _find_cycle(nodes: list[str], after: dict[str, list[str]]) -> list[str]:
    remaining = set(nodes)
    start = nodes[0]
    path: list[str] = []
    seen: dict[str, int] = {}
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(n for n in after[node] if n in remaining)
    return path[seen[node] :]


def _normal(path: str) -> str:
    return os.path.normpath(path) if "://" not in path else path.rstrip("/")


def _writer_of(source: str, destinations: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """The task output that ``source`` reads: the same path, or a path inside it."""
    if "${" in source:
        return None
    path = _normal(source)
    while True:
        if path in destinations:
            return destinations[path]
        parent = os.path.dirname(path) if "://" not in path else path.rsplit("/", 1)[0]
        if not parent or parent == path or parent.endswith(":/"):
            return None
        path = parent


def _quote_value(text: str) -> str:
    """A parameter's value for a command line, shell-quoted; a reference to another task's
    output is left for the runner, which quotes the path once it is known."""
    if _TASK_PLACEHOLDER.fullmatch(text):
        return text
    return shlex.quote(text)
