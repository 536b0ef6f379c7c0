"""Real English text that ships with Python: the docstrings of standard-library modules.

No download is allowed, so the tiny models of the tests, the example and the benchmarks
learn a little language from these, and the chat records to select from are questions
about a function answered by its docstring. ``corrupt`` damages an answer in one of four
ways (shuffled words, random characters, a repeated fragment, cut mid-sentence): the
known-bad half of the selection benchmark.
"""

from __future__ import annotations

import importlib
import inspect
import random
import re
import string
from typing import Any

MODULES = (
    "argparse", "ast", "base64", "bisect", "calendar", "collections", "contextlib", "copy",
    "csv", "dataclasses", "datetime", "decimal", "difflib", "enum", "fractions", "functools",
    "glob", "gzip", "hashlib", "heapq", "inspect", "io", "itertools", "json", "logging",
    "os", "pathlib", "pickle", "pprint", "queue", "random", "re", "shutil", "socket",
    "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading",
    "unittest", "urllib.parse", "uuid", "zipfile",
)  # fmt: skip
CORRUPTIONS = ("shuffled", "random_characters", "repeated", "truncated")
_SPACE = re.compile(r"\s+")


def _paragraph(doc: str) -> str:
    return _SPACE.sub(" ", doc.strip().split("\n\n")[0]).strip()


def documented() -> list[tuple[str, str]]:
    """(qualified name, first paragraph of its docstring) of public functions and classes,
    in a fixed order; only paragraphs of 60 to 600 characters that read as prose."""
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name, value in sorted(vars(module).items()):
            if name.startswith("_") or not (inspect.isfunction(value) or inspect.isclass(value)):
                continue
            if getattr(value, "__module__", None) != module.__name__:
                continue
            members = [(name, value)]
            if inspect.isclass(value):
                members += [
                    (f"{name}.{m}", f)
                    for m, f in sorted(vars(value).items())
                    if not m.startswith("_") and inspect.isfunction(f)
                ]
            for qualified, member in members:
                text = _paragraph(inspect.getdoc(member) or "")
                if _prose(text) and text not in seen:
                    seen.add(text)
                    found.append((f"{module_name}.{qualified}", text))
    return found


def _prose(text: str) -> bool:
    return 60 <= len(text) <= 600 and text[0].isupper() and " " in text and "(" not in text[:20]


def corpus() -> list[str]:
    """Module and member docstrings as plain paragraphs (the tiny model's pretraining)."""
    texts: list[str] = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        texts += [_paragraph(p) for p in (module.__doc__ or "").split("\n\n") if len(p) > 40]
    texts += [text for _, text in documented()]
    return [t for t in texts if t]


def chat_record(name: str, answer: str, dataset: str, index: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": f"What does {name} do?"},
            {"role": "assistant", "content": answer},
        ],
        "dataset": dataset,
        "id": f"{dataset}_{index}",
    }


def corrupt(text: str, kind: str, rng: random.Random) -> str:
    words = text.split()
    if kind == "shuffled":
        rng.shuffle(words)
        return " ".join(words)
    if kind == "random_characters":
        alphabet = string.ascii_letters + string.digits + string.punctuation + "     "
        return "".join(rng.choice(alphabet) for _ in range(len(text)))
    if kind == "repeated":
        start = rng.randrange(max(1, len(words) - 4))
        fragment = " ".join(words[start : start + 4])
        return " ".join([fragment] * max(2, len(words) // 4))
    if kind == "truncated":
        cut = max(1, len(words) // 3)
        return " ".join(words[:cut])
    raise ValueError(f"unknown corruption {kind!r}; use one of {', '.join(CORRUPTIONS)}")


def clean_and_corrupted(
    count: int, seed: int, dataset: str = "docs"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``count`` clean records and ``count`` corrupted ones (each corruption in turn), the
    corrupted from other docstrings than the clean. Ids say which: ``<dataset>_clean_<i>``,
    ``<dataset>_<corruption>_<i>``."""
    items = documented()
    rng = random.Random(seed)
    rng.shuffle(items)
    if len(items) < 2 * count:
        raise ValueError(f"only {len(items)} docstrings; ask for at most {len(items) // 2}")
    clean = [
        chat_record(name, text, dataset, i) | {"id": f"{dataset}_clean_{i}"}
        for i, (name, text) in enumerate(items[:count])
    ]
    bad = []
    for i, (name, text) in enumerate(items[count : 2 * count]):
        kind = CORRUPTIONS[i % len(CORRUPTIONS)]
        record = chat_record(name, corrupt(text, kind, rng), dataset, i)
        bad.append(record | {"id": f"{dataset}_{kind}_{i}"})
    return clean, bad
