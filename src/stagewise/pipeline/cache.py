"""Cache keys: a task is skipped when an earlier run ran the same thing on the same inputs.

The key hashes the task's definition (type, function or command, image, env, outputs'
destinations), its resolved parameters, the fingerprint of every input, and the source
code of its function (``pipeline/code.py`` reads it without importing the module). A shell task's key
covers its command line but not the scripts that line calls: set ``cache: false`` on a
shell task whose scripts change between runs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def cache_key(definition: dict[str, Any], inputs: dict[str, str], code: str | None) -> str:
    payload = json.dumps(
        {"definition": definition, "inputs": inputs, "code": code},
        sort_keys=True,
        default=repr,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()
