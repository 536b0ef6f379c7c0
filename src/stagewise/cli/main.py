"""The ``stagewise`` entry point: the typer app, and errors printed without a traceback."""

from __future__ import annotations

import os
import sys

import typer

from stagewise import __version__
from stagewise.cli import artifacts as artifact_commands
from stagewise.cli import data as data_commands
from stagewise.cli import pipeline as pipeline_commands
from stagewise.cli import release as release_commands
from stagewise.cli import runs as runs_commands
from stagewise.cli import select as select_commands
from stagewise.cli import stage as stage_commands
from stagewise.cli import train as train_commands
from stagewise.cli.output import render_error
from stagewise.errors import StagewiseError

app = typer.Typer(
    name="stagewise",
    help="Staged, multi-dataset model training: which data each stage of a run trains on.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(stage_commands.app, name="stage")
app.add_typer(release_commands.app, name="release")
app.add_typer(data_commands.app, name="data")
app.command("run")(pipeline_commands.run)
app.add_typer(runs_commands.app, name="runs")
app.add_typer(artifact_commands.app, name="artifacts")
app.command("train")(train_commands.train)
app.command("eval")(train_commands.evaluate)
app.add_typer(select_commands.app, name="select")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stagewise {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error."),
    home: str | None = typer.Option(
        None, "--home", help="stagewise's state folder (default ./.stagewise, or STAGEWISE_HOME)."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Staged, multi-dataset model training.

    Start with 'stagewise release init DIR', then 'stagewise stage status --repo DIR'.
    """
    if home:
        os.environ["STAGEWISE_HOME"] = home


def run() -> None:
    try:
        app()
    except StagewiseError as exc:
        if "--debug" in sys.argv:
            raise
        render_error(exc)
        sys.exit(2)
    except (OSError, UnicodeError, ValueError) as exc:
        # Input the checks did not foresee (an odd path, bytes that are not text): still one
        # readable line, and the traceback on request.
        if "--debug" in sys.argv:
            raise
        render_error(
            StagewiseError(
                f"{type(exc).__name__}: {exc}",
                hint="check the arguments and files named above; rerun with --debug for the traceback",
            )
        )
        sys.exit(2)
