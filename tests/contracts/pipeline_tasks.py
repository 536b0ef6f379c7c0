"""Task functions for the executor contract tests (importable by local and Ray workers).

Each appends its task's name to the ledger file (the pipeline parameter ``ledger``) when
it does its work, so that a test can tell how many times a task really ran, whatever the
database says.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def _note(ledger: str | None, context: dict[str, Any]) -> None:
    if ledger:
        with open(ledger, "a", encoding="utf-8") as out:
            out.write(f"{context['task']}\n")


def source(out: str, context: dict[str, Any], text: str = "a", ledger: str | None = None) -> None:
    """The diamond's top: writes ``text``."""
    _note(ledger, context)
    Path(out).write_text(text, encoding="utf-8")


def upper(data: str, out: str, context: dict[str, Any], ledger: str | None = None) -> None:
    _note(ledger, context)
    Path(out).write_text(Path(data).read_text(encoding="utf-8").upper(), encoding="utf-8")


def reverse(data: str, out: str, context: dict[str, Any], ledger: str | None = None) -> None:
    _note(ledger, context)
    Path(out).write_text(Path(data).read_text(encoding="utf-8")[::-1], encoding="utf-8")


def join(
    left: str, right: str, out: str, context: dict[str, Any], ledger: str | None = None
) -> None:
    """The diamond's bottom: both branches, joined with '+'."""
    _note(ledger, context)
    texts = [Path(p).read_text(encoding="utf-8") for p in (left, right)]
    Path(out).write_text("+".join(texts), encoding="utf-8")


def flaky(counter: str, out: str) -> None:
    """Fails on its first attempt, succeeds on the next (the count lives in a file)."""
    path = Path(counter)
    count = int(path.read_text(encoding="utf-8")) + 1 if path.exists() else 1
    path.write_text(str(count), encoding="utf-8")
    if count == 1:
        raise RuntimeError("flaky: the first attempt fails on purpose")
    Path(out).write_text(f"attempt {count}", encoding="utf-8")


def broken(context: dict[str, Any], ledger: str | None = None) -> None:
    _note(ledger, context)
    raise ValueError("broken: this task always fails")


def gated(
    flag: str, data: str, out: str, context: dict[str, Any], ledger: str | None = None
) -> None:
    """Fails while the flag file says 'bad' (a test fixes it, then resumes the run)."""
    if Path(flag).read_text(encoding="utf-8").strip() == "bad":
        raise RuntimeError("gated: the flag file says 'bad'")
    _note(ledger, context)
    Path(out).write_text(Path(data).read_text(encoding="utf-8") + "!", encoding="utf-8")


def sleeper(seconds: float = 30.0) -> None:
    time.sleep(seconds)
