"""``training`` and ``evaluation`` tasks that name no function.

With a ``config`` parameter (a training config file, seed 003's YAML) they run the
multi-dataset trainer (:mod:`stagewise.train.task`); without one, the small built-in
linear classifier (:mod:`stagewise.pipeline.tasks.linear`) that seed 002's
incremental-learning example trains on a sample store. The trainer is found by name, so
the pipeline engine never imports torch.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from stagewise.pipeline.tasks import linear


def _call(function: Callable[..., Any], arguments: dict[str, Any]) -> Any:
    """``function`` with the arguments it takes (all of them if it takes ``**kwargs``)."""
    parameters = inspect.signature(function).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        arguments = {k: v for k, v in arguments.items() if k in parameters}
    return function(**arguments)


def _trainer(function: str) -> Callable[..., Any]:
    return getattr(importlib.import_module("stagewise.train.task"), function)  # type: ignore[no-any-return]


def train(context: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    if "config" in kwargs:
        return _call(_trainer("train_task"), {**kwargs, "context": context})
    return _call(linear.train, kwargs)


def evaluate(context: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    if "config" in kwargs:
        return _call(_trainer("evaluate_task"), {**kwargs, "context": context})
    return _call(linear.evaluate, kwargs)
