"""``stagewise artifacts ...``: what pipeline runs wrote, and where it came from (the run
and task that wrote an artifact, and the artifacts that task read)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.tree import Tree

from stagewise.cli.output import console, print_json
from stagewise.cli.runs import JsonOption, artifact_data, open_store

if TYPE_CHECKING:
    from stagewise.store.runs import ArtifactRecord, RunStore

app = typer.Typer(
    help="Artifacts written by pipeline runs, and where they came from.", no_args_is_help=True
)


def lineage_data(store: RunStore, artifact: ArtifactRecord, seen: set[str]) -> dict[str, Any]:
    """The artifact, and recursively the artifacts its writing task read."""
    data = artifact_data(artifact)
    data["external"] = artifact.run_id is None
    if artifact.id in seen:  # a shared ancestor is drawn in full once
        return {**data, "inputs": [], "repeated": True}
    seen.add(artifact.id)
    inputs = store.readers_and_writer(artifact)["inputs"]
    data["inputs"] = [lineage_data(store, a, seen) for a in inputs]
    return data


@app.command()
def lineage(
    artifact_id: str = typer.Argument(
        ..., metavar="ID", help="An artifact id, or a unique prefix of one."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Show where an artifact came from: the run and task that wrote it, and the
    artifacts that task read, back to the external inputs."""
    store = open_store()
    data = lineage_data(store, store.artifact(artifact_id), set())
    if as_json:
        print_json(data)
        return
    root = Tree(_lineage_label(data))
    _add_inputs(root, data)
    console.print(root)


def _add_inputs(node: Tree, item: dict[str, Any]) -> None:
    for child in item["inputs"]:
        _add_inputs(node.add(_lineage_label(child)), child)


def _lineage_label(item: dict[str, Any]) -> str:
    head = f"[bold]{item['id']}[/bold]  {escape(item['uri'])}"
    if item["external"]:
        origin = "[dim]external input[/dim]"
    else:
        origin = f"written by [bold]{escape(item['task'] or '')}[/bold] in run {item['run_id']}"
    detail = f"{item['kind']}, {item['fingerprint'][:16]}"
    repeated = "  [dim](shown above)[/dim]" if item.get("repeated") else ""
    return f"{head}\n{origin}  [dim]({escape(detail)})[/dim]{repeated}"
