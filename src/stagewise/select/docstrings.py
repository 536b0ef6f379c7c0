"""Real English text that ships with Python: the docstrings of standard-library modules.

No download is allowed, so the tiny models of the tests, the example and the benchmarks
learn a little language from these, and the chat records to select from are questions
about a function answered by its docstring. ``corrupt`` damages an answer in one of four
ways (shuffled words, random characters, a repeated fragment, cut mid-sentence): the
known-bad half of the selection benchmark.
"""

from __future__ import annotations

import ast
import random
import re
import string
import sysconfig
from pathlib import Path
from typing import Any

MODULES = (
    "argparse", "ast", "base64", "bisect", "calendar", "collections", "contextlib", "copy",
    "csv", "dataclasses", "datetime", "decimal", "difflib", "enum", "fractions", "functools",
    "glob", "gzip", "hashlib", "heapq", "inspect", "io", "json", "logging",
    "os", "pathlib", "pickle", "pprint", "queue", "random", "re", "shutil", "socket",
    "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading",
    "unittest", "urllib.parse", "uuid", "zipfile",
)  # fmt: skip
CORRUPTIONS = ("shuffled", "random_characters", "repeated", "truncated")
_SPACE = re.compile(r"\s+")


def _paragraph(doc: str) -> str:
    return _SPACE.sub(" ", doc.strip().split("\n\n")[0]).strip()


def documented() -> list[tuple[str, str]]:
    """(qualified name, first paragraph of its docstring) of the public functions, classes
    and methods defined in the modules' source files, in a fixed order; only paragraphs of
    60 to 600 characters that read as prose. Read from the source (not the live objects),
    so that what other libraries patch into the standard library changes nothing."""
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for module_name in MODULES:
        for qualified, doc in _definitions(_source(module_name)):
            text = _paragraph(doc)
            if _prose(text) and text not in seen:
                seen.add(text)
                found.append((f"{module_name}.{qualified}", text))
    return found


def _source(module_name: str) -> ast.Module:
    """The parsed source of a standard-library module (``os`` and ``io`` are frozen in
    the interpreter, but their files are there too)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    relative = Path(*module_name.split("."))
    for candidate in (stdlib / relative.with_suffix(".py"), stdlib / relative / "__init__.py"):
        if candidate.is_file():
            return ast.parse(candidate.read_text(encoding="utf-8"))
    raise ValueError(f"{module_name} has no Python source under {stdlib}")


def _definitions(tree: ast.Module) -> list[tuple[str, str]]:
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    found: list[tuple[str, str]] = []
    for node in sorted((n for n in tree.body if isinstance(n, kinds)), key=lambda n: n.name):
        if node.name.startswith("_"):
            continue
        found.append((node.name, ast.get_docstring(node) or ""))
        if isinstance(node, ast.ClassDef):
            methods = [
                m for m in node.body if isinstance(m, kinds[:2]) and not m.name.startswith("_")
            ]
            for method in sorted(methods, key=lambda m: m.name):
                found.append((f"{node.name}.{method.name}", ast.get_docstring(method) or ""))
    return found


def _prose(text: str) -> bool:
    return 60 <= len(text) <= 600 and text[0].isupper() and " " in text and "(" not in text[:20]


def corpus() -> list[str]:
    """Module and member docstrings as plain paragraphs (the tiny model's pretraining)."""
    texts: list[str] = []
    for module_name in MODULES:
        doc = ast.get_docstring(_source(module_name)) or ""
        texts += [_paragraph(p) for p in doc.split("\n\n") if len(p) > 40]
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
