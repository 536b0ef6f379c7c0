"""Rendering for the CLI: rich tables on a terminal, JSON with ``--json``, errors as text."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from stagewise.errors import Problem, StagewiseError

# Off a terminal (pipes, CI logs) tables get room instead of rich's default 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
errors = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> Table:
    result = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        result.add_column(column)
    for row in rows:
        result.add_row(*("-" if v is None or v == "" else str(v) for v in row))
    return result


def render_error(exc: StagewiseError) -> None:
    where = f"[bold]{exc.location}[/bold]: " if exc.location else ""
    errors.print(f"[red]error:[/red] {where}{_escape(exc.headline)}")
    for problem in exc.problems:
        errors.print(f"  - {_escape(problem.render())}".replace("\n", "\n  "))
    if exc.hint:
        errors.print(f"  [cyan]fix:[/cyan] {_escape(exc.hint)}")


def render_problem(problem: Problem) -> None:
    color = "red" if problem.severity == "error" else "yellow"
    console.print(f"[{color}]{problem.severity}[/{color}] {_escape(problem.render())}")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
