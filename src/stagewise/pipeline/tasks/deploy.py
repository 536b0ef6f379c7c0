"""The built-in ``deployment`` task: the model, copied to where deployed models live.

:func:`deploy` copies the ``model`` input (a folder, or one file) to the
``deployed_model`` output and adds ``deployment.json`` (where the model came from, when,
and the run, task and attempt that deployed it). The runner publishes the output only
once it is complete (a folder replaces the old one by two renames, so for a moment the
path is missing, but it never holds a half-copied model), and records it in the metadata database as an artifact of kind ``model``
with a ``model_deployed`` event. Serving it is a later issue's work.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stagewise.errors import DataError

DEPLOYMENT_FILE = "deployment.json"


def deploy(
    model: str, deployed_model: str, context: dict[str, Any] | None = None, **kwargs: Any
) -> dict[str, Any]:
    """The ``deployment`` task: copy ``model`` to ``deployed_model`` with a record."""
    if not os.path.exists(model):
        raise DataError(
            "there is no model to deploy here",
            location=model,
            hint="point the task's 'model' input at a model folder (a training task's output)",
        )
    if os.path.isdir(model):
        shutil.copytree(model, deployed_model, symlinks=False)
    else:
        os.makedirs(deployed_model, exist_ok=True)
        shutil.copy2(model, os.path.join(deployed_model, os.path.basename(model)))
    context = context or {}
    record = {
        "source": os.path.abspath(model),
        "deployed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": context.get("run_id"),
        "task": context.get("task"),
        "attempt": context.get("attempt"),
        "image": context.get("image"),
    }
    Path(deployed_model, DEPLOYMENT_FILE).write_text(
        json.dumps(record, indent=2) + "\n", encoding="utf-8"
    )
    files = sum(len(names) for _, _, names in os.walk(deployed_model))
    return {"source": record["source"], "files": files}
