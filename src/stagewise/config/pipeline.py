"""``pipeline.yaml``: seed 002's pipeline definition (§5.1), plus the keys a runner needs.

The seed's keys are kept exactly: ``apiVersion``, ``kind: Pipeline``, ``metadata`` (name,
version), ``spec.tasks`` (name, type, image, resources, inputs with ``source``, outputs
with ``destination``), ``spec.dependencies`` (``from``/``to``) and ``spec.parameters``.
stagewise adds per-task ``function``, ``command``, ``parameters``, ``retries``,
``retry_delay``, ``timeout``, ``cache`` and ``env``. Any text field may hold
``${parameters.NAME}`` and ``${tasks.TASK.outputs.NAME}`` references.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from stagewise.config.base import FormatModel, NonNegative

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def duration_seconds(value: Any) -> float:
    """``30``, ``1.5``, ``"90s"``, ``"5m"``, ``"2h"`` or ``"250ms"`` as seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30, '90s', '5m' or '2h', found {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(
                f"expected a duration such as 30, '90s', '5m' or '2h', found {value!r}"
            )
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    if seconds < 0:
        raise ValueError(f"expected a duration >= 0, found {value!r}")
    return seconds


class Metadata(FormatModel):
    name: str = Field(
        pattern=NAME_PATTERN,
        description="the pipeline's name: letters, digits, '_', '-' and '.'; names its "
        "output folder and its runs",
    )
    version: str | int | float | None = Field(
        None, description="the definition's version, recorded with every run"
    )
    description: str | None = Field(None, description="free text")


class Resources(FormatModel):
    cpu: str | int | float = Field(
        1, description="CPU cores the task needs: 2, 0.5, '2' or '500m' (millicores)"
    )
    memory: str | int | None = Field(
        None, description="memory the task needs: '4Gi', '512Mi', '2G' or a number of bytes"
    )
    gpu: str | int | float = Field(0, description="GPUs the task needs: 0, 1, '1', or 0.5")


class InputSpec(FormatModel):
    name: str = Field(pattern=NAME_PATTERN, description="the input's name within its task")
    source: str = Field(
        description="a path or URL, or ${tasks.TASK.outputs.NAME} for another task's output; "
        "a path that another task writes makes that task run first"
    )


class OutputSpec(FormatModel):
    name: str = Field(pattern=NAME_PATTERN, description="the output's name within its task")
    destination: str | None = Field(
        None,
        description="where the output is published; default: "
        "<run folder>/<task>/<name>. It is written to a temporary name and renamed into "
        "place only when the task succeeds",
    )


class Dependency(FormatModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from", description="the task that runs first")
    to: str = Field(description="the task that waits for it")


class TaskSpec(FormatModel):
    name: str = Field(pattern=NAME_PATTERN, description="the task's name, unique in the pipeline")
    type: str = Field(
        "python",
        description="python, shell, data_processing, training, evaluation or deployment",
    )
    image: str | None = Field(
        None,
        description="container image for cluster runs; a local run uses the current "
        "environment and says so",
    )
    function: str | None = Field(
        None,
        description="for python tasks (and training/evaluation/data_processing with your own "
        "code): 'package.module:function' or 'path/to/file.py:function'",
    )
    command: str | list[str] | None = Field(
        None,
        description="for shell tasks: a command line; ${...} values are shell-quoted",
    )
    resources: Resources = Field(default_factory=Resources, description="what the task needs")
    inputs: list[InputSpec] = Field(default_factory=list, description="what the task reads")
    outputs: list[OutputSpec] = Field(default_factory=list, description="what the task writes")
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="the task's own parameters, passed to its function by name; they "
        "override the pipeline's parameters of the same name",
    )
    retries: int = Field(0, ge=0, le=100, description="how many times a failed attempt is retried")
    retry_delay: NonNegative = Field(
        1.0,
        description="seconds before the first retry; each further retry waits twice as long "
        "(at most retry_max_delay)",
    )
    retry_max_delay: NonNegative = Field(300.0, description="the longest wait between retries")
    timeout: str | int | float | None = Field(
        None,
        description="an attempt running longer is stopped and counts as failed: 30, '90s', "
        "'5m', '2h'",
    )
    cache: bool = Field(
        True,
        description="reuse the outputs of an earlier run with the same definition, "
        "parameters, inputs and code",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="environment variables set for the task"
    )

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: Any) -> Any:
        if value is not None:
            duration_seconds(value)
        return value


class PipelineBody(FormatModel):
    tasks: list[TaskSpec] = Field(min_length=1, description="the tasks of the pipeline")
    dependencies: list[Dependency] = Field(
        default_factory=list,
        description="order between tasks: 'from' runs before 'to' (wiring an output to an "
        "input adds the same order by itself)",
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="values shared by all tasks, set from the command line as NAME=VALUE",
    )


class PipelineFile(FormatModel):
    apiVersion: str = Field(description="'train-platform/v1' (seed 002) or 'stagewise/v1'")
    kind: Literal["Pipeline"] = Field(description="always 'Pipeline'")
    metadata: Metadata = Field(description="name and version")
    spec: PipelineBody = Field(description="tasks, dependencies and parameters")
