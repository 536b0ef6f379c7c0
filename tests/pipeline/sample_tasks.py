"""Task functions for the runner's tests: small, real, and leaving traces on disk."""

from __future__ import annotations

import os
import time
from pathlib import Path


def write(out: str, text: str = "hello") -> str:
    Path(out).write_text(text)
    return text


def upper(source: str, out: str) -> None:
    Path(out).write_text(Path(source).read_text().upper())


def join(left: str, right: str, out: str) -> None:
    Path(out).write_text(Path(left).read_text() + "+" + Path(right).read_text())


def ledger(out: str, ledger: str, name: str = "", pause: float = 0.0) -> None:
    """Appends its name to a ledger file, then writes its output."""
    with open(ledger, "a") as book:
        book.write(name + "\n")
    time.sleep(pause)
    Path(out).write_text(name)


def fail(message: str = "always fails") -> None:
    raise ValueError(message)


def writes_nothing(out: str) -> None:
    """Forgets to write its output."""


def sleep(seconds: float = 30.0) -> None:
    time.sleep(seconds)


def noisy() -> None:
    print("to stdout")
    os.system("echo from a child process")  # the log must catch a child process too


def with_context(out: str, context: dict) -> None:
    Path(out).write_text(f"{context['task']}:{context['attempt']}")


def spawn_and_wait(pidfile: str) -> None:
    """Starts a child that would outlive it, then hangs (until a timeout stops it)."""
    import subprocess

    child = subprocess.Popen(["sleep", "60"])
    Path(pidfile).write_text(str(child.pid))
    time.sleep(60)


def gpus(out: str) -> None:
    time.sleep(0.3)  # so that two of them overlap
    Path(out).write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
