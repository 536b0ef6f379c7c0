"""Pipelines: seed 002's DAG of tasks, run by a crash-safe runner on local processes or Ray.

``spec`` says what a pipeline is (YAML or the Python SDK), ``plan`` checks it, ``runner``
runs it, ``executors`` say where tasks run, ``tasks`` what each task type runs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Input", "Output", "Pipeline", "load_pipeline", "task"]


def __getattr__(name: str) -> Any:
    # Lazy: worker processes import stagewise.pipeline.executors.local and should not pay
    # for pydantic and the config package they never use.
    if name in __all__:
        from stagewise.pipeline import spec

        return getattr(spec, name)
    raise AttributeError(f"module 'stagewise.pipeline' has no attribute {name!r}")
