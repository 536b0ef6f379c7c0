"""``stagewise data ...``: preprocess once into a sample store, inspect, verify, synthesise
data, and show a stage's mixture plan. The data extra must be installed
(``pip install 'stagewise[data]'``); the commands import it on use."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from stagewise.cli.output import console, errors, print_json, render_problem, table
from stagewise.config.loading import Document, parse_document
from stagewise.errors import ConfigError, StagewiseError

app = typer.Typer(
    help="Prepare data once into a sample store, then load it in milliseconds.",
    no_args_is_help=True,
)
synth_app = typer.Typer(help="Write realistic synthetic raw data.", no_args_is_help=True)
app.add_typer(synth_app, name="synth")

JsonOption = typer.Option(False, "--json", help="Print JSON instead of tables.")


def _require_data_extra() -> None:
    try:
        import numpy  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        raise StagewiseError(
            "the data commands need numpy and pyarrow",
            hint="pip install 'stagewise[data]'",
        ) from None


@app.command()
def preprocess(
    config_file: Path | None = typer.Argument(
        None, help="A YAML config with the same keys as the flags (flags override it)."
    ),
    source: str | None = typer.Option(
        None,
        "--source",
        "--odps_table",
        help="Records: file, glob, folder, URL, or SQLAlchemy URL.",
    ),
    output: str | None = typer.Option(
        None, "--output", "-o", "--output_table", help="The store's folder."
    ),
    transform: str | None = typer.Option(
        None, "--transform", help="timeseries (default), none, or module:function."
    ),
    query: str | None = typer.Option(None, "--query", help="SQL query (database sources)."),
    table_name: str | None = typer.Option(None, "--table", help="SQL table (database sources)."),
    meta: str | None = typer.Option(
        None, "--meta", "--odps_meta_table", help="Node metadata with coordinates."
    ),
    input_len: int | None = typer.Option(None, "--input_len", "--input-len", help="Input steps."),
    output_len: int | None = typer.Option(
        None, "--output_len", "--output-len", help="Target steps."
    ),
    train_ratio: float | None = typer.Option(
        None, "--train_ratio", "--train-ratio", help="Share of steps for training (0.6)."
    ),
    val_ratio: float | None = typer.Option(
        None, "--val_ratio", "--val-ratio", help="Share of steps for validation (0.2)."
    ),
    test_ratio: float | None = typer.Option(
        None, "--test_ratio", "--test-ratio", help="Share of steps for testing (0.2)."
    ),
    start_date: str | None = typer.Option(
        None, "--start_date", "--start-date", help="First day, YYYYMMDD."
    ),
    end_date: str | None = typer.Option(
        None, "--end_date", "--end-date", help="Last day (inclusive), YYYYMMDD."
    ),
    freq: str | None = typer.Option(None, "--freq", help="Series step, e.g. 5min."),
    patch_size: int | None = typer.Option(
        None, "--patch_size", "--patch-size", help="Nodes per spatial patch (0: off)."
    ),
    missing: str | None = typer.Option(None, "--missing", help="zero, nan or ffill."),
    batch_size: int | None = typer.Option(
        None, "--batch_size", "--batch-size", help="Records per chunk (bounds memory)."
    ),
    on_error: str | None = typer.Option(None, "--on-error", help="raise (default) or skip."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when the cache has it."),
    as_json: bool = JsonOption,
) -> None:
    """Read a source once, transform it, and write a new version of a sample store.

    Re-running with the same source and settings is a cache hit that returns at once.
    """
    _require_data_extra()
    from stagewise.config.base import load_model
    from stagewise.config.preprocess import PreprocessConfig
    from stagewise.data.preprocess import preprocess as run_preprocess

    doc = Document(data={}, source="command line")
    if config_file is not None:
        try:
            text = config_file.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the config: {exc.strerror}", location=str(config_file)
            ) from None
        doc = parse_document(text, str(config_file))
        if not isinstance(doc.data, dict):
            raise ConfigError("expected a mapping of settings", location=str(config_file))
    data: dict[str, Any] = dict(doc.data)
    given = {
        "source": source,
        "output": output,
        "transform": transform,
        "query": query,
        "table": table_name,
        "batch_size": batch_size,
        "on_error": on_error,
    }
    data.update({k: v for k, v in given.items() if v is not None})
    flags = {
        "input_len": input_len,
        "output_len": output_len,
        "train_ratio": train_ratio,
        "val_ratio": val_ratio,
        "test_ratio": test_ratio,
        "start_date": start_date,
        "end_date": end_date,
        "meta": meta,
        "freq": freq,
        "patch_size": patch_size,
        "missing": missing,
    }
    series = data.get("timeseries") or {}
    if not isinstance(series, dict):
        raise ConfigError(
            f"timeseries must be a mapping of settings, found {series!r}",
            location=f"{doc.source}:{doc.line_of(('timeseries',)) or 1} (timeseries)",
            hint="write e.g. 'timeseries:' then indented 'input_len: 12' lines",
        )
    series = dict(series)
    series.update({k: v for k, v in flags.items() if v is not None})
    if series:
        data["timeseries"] = series
    doc.data = data
    config = load_model(PreprocessConfig, doc, what="preprocess config")
    unknown = config.unknown_keys()
    if unknown:
        names = ", ".join(".".join(map(str, path)) for path, _ in unknown)
        raise ConfigError(
            f"unknown setting(s): {names}",
            location=doc.source,
            hint="see 'stagewise data preprocess --help' and docs/formats/preprocess-config.md",
        )

    progress = _progress_bar(as_json)
    with progress as bar:
        task = bar.add_task("reading records", total=None)
        result = run_preprocess(
            config, force=force, progress=lambda n: bar.update(task, completed=n)
        )
    store = result.store
    summary = {
        "store": store.folder,
        "cached": result.cached,
        "seconds": round(result.seconds, 3),
        "records": result.records,
        "skipped": result.skipped,
        "first_errors": result.first_errors,
        "samples": len(store),
        "splits": store.splits,
    }
    if as_json:
        print_json(summary)
        return
    if result.cached:
        console.print(f"cache hit: {store.folder} is up to date ({result.seconds * 1000:.1f} ms)")
    else:
        rate = result.records / result.seconds if result.seconds else 0
        console.print(
            f"wrote {store.folder}: {len(store):,} samples from {result.records:,} records "
            f"in {result.seconds:.1f} s ({rate:,.0f} records/s)"
        )
    console.print("splits: " + ", ".join(f"{k} {v:,}" for k, v in store.splits.items()))
    counts = store.metadata.stats.get("dataset_counts")
    if counts:  # seed 003's per-dataset loading statistics, for a list of JSONL files
        from stagewise.data.sources import format_loading_statistics

        console.print(format_loading_statistics(counts, "train"))
    for path in store.metadata.stats.get("missing_files") or []:
        errors.print(f"[yellow]skipped a missing file:[/yellow] {path}")
    if result.skipped:
        errors.print(f"[yellow]skipped {result.skipped:,} bad records[/yellow]; the first:")
        for line in result.first_errors:
            errors.print(f"  {line}")


def _progress_bar(quiet: bool) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,} records"),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
        disable=quiet or not sys.stderr.isatty(),
    )


def _summary(store: Any) -> dict[str, Any]:
    meta = store.metadata
    return {
        "store": store.folder,
        "key": meta.key,
        "kind": meta.kind,
        "created_at": meta.created_at,
        "format_version": meta.format_version,
        "samples": meta.num_samples,
        "splits": {k: v.count for k, v in meta.splits.items()},
        "columns": [c.model_dump() for c in meta.columns],
        "arrays": {k: {"dtype": a.dtype, "shape": a.shape} for k, a in meta.arrays.items()},
        "windows": meta.windows.model_dump() if meta.windows else None,
        "bytes": sum(s.bytes for s in meta.shards) + sum(a.bytes for a in meta.arrays.values()),
        "stats": meta.stats,
        "source": meta.source,
    }


def _preview(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.size <= 6:
            return value.tolist()
        return f"{value.dtype}{list(value.shape)}"
    if isinstance(value, np.generic):
        return value.item()
    return value


@app.command()
def inspect(
    store_path: str = typer.Argument(..., metavar="STORE", help="A store folder or URL."),
    samples: int = typer.Option(3, "--samples", "-n", help="How many samples to show."),
    version: str | None = typer.Option(None, "--version", help="A version other than LATEST."),
    as_json: bool = JsonOption,
) -> None:
    """Show a store's schema, splits, counts and its first samples."""
    _require_data_extra()
    from stagewise.data.samples import list_versions, open_store

    store = open_store(store_path, version=version)
    info = _summary(store)
    info["versions"] = list_versions(store_path)
    shown = [{k: _preview(v) for k, v in store[i].items()} for i in range(min(samples, len(store)))]
    if as_json:
        print_json({**info, "first_samples": shown})
        return
    console.print(
        f"[bold]{store.folder}[/bold]  ({info['kind']}, format {info['format_version']}, created {info['created_at']})"
    )
    console.print(
        f"samples: {info['samples']:,}   size: {info['bytes'] / 1e6:,.1f} MB   versions: {len(info['versions'])}"
    )
    console.print(
        table("splits", ["split", "samples"], [[k, f"{v:,}"] for k, v in info["splits"].items()])
    )
    if info["columns"]:
        console.print(
            table(
                "columns",
                ["name", "type", "shape"],
                [[c["name"], c["type"], c["shape"] or "-"] for c in info["columns"]],
            )
        )
    if info["arrays"]:
        console.print(
            table(
                "arrays",
                ["name", "dtype", "shape"],
                [[k, a["dtype"], a["shape"]] for k, a in info["arrays"].items()],
            )
        )
    if shown:
        names = list(shown[0])
        console.print(
            table(f"first {len(shown)} samples", names, [[s[n] for n in names] for s in shown])
        )


@app.command()
def verify(
    store_path: str = typer.Argument(..., metavar="STORE", help="A store folder or URL."),
    version: str | None = typer.Option(None, "--version", help="A version other than LATEST."),
    as_json: bool = JsonOption,
) -> None:
    """Check every shard and array of a store against its recorded checksums (exit 1 if any
    differs)."""
    _require_data_extra()
    from stagewise.data.samples import open_store, verify_store

    store = open_store(store_path, version=version)
    problems = verify_store(store)
    files = len(store.metadata.shards) + len(store.metadata.arrays)
    if as_json:
        print_json(
            {
                "store": store.folder,
                "files": files,
                "ok": not problems,
                "problems": [p.to_dict() for p in problems],
            }
        )
    else:
        for problem in problems:
            render_problem(problem)
        if not problems:
            console.print(f"ok: {files} files match their checksums ({store.folder})")
    if problems:
        raise typer.Exit(1)


@synth_app.command("traffic")
def synth_traffic(
    output: Path = typer.Argument(..., help="Folder to write records and nodes.csv into."),
    nodes: int = typer.Option(200, "--nodes", help="Number of sensors (nodes)."),
    steps: int = typer.Option(
        2016, "--steps", help="Time steps per node (2016 = 7 days of 5 min)."
    ),
    freq: str = typer.Option("5min", "--freq", help="Step between readings."),
    start: str = typer.Option("20250919", "--start", help="First day, YYYYMMDD."),
    missing: float = typer.Option(0.02, "--missing", help="Share of readings dropped."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    file_format: str = typer.Option("parquet", "--format", help="parquet, csv or jsonl."),
) -> None:
    """Write synthetic traffic readings (daily and weekly cycles, nearby nodes correlated,
    noise, missing readings): records.<format> and nodes.csv."""
    _require_data_extra()
    from stagewise.config.preprocess import freq_seconds
    from stagewise.data.synth import synth_traffic as write

    try:
        step = freq_seconds(freq)
        result = write(
            output,
            nodes=nodes,
            steps=steps,
            freq_seconds=step,
            start=start,
            missing=missing,
            seed=seed,
            format=file_format,
        )
    except ValueError as exc:
        raise ConfigError(str(exc), location="synth traffic", hint="see --help") from None
    console.print(
        f"wrote {result.rows:,} readings to {result.records} and {nodes} nodes to {result.nodes}"
    )


@app.command()
def plan(
    stage: str | None = typer.Argument(
        None, help="The stage; default: the one a run would train on now."
    ),
    repo: str | None = typer.Option(
        None, "--repo", "-r", help="The release repo (default: STAGE_CONFIG_PATH, else here)."
    ),
    split: str = typer.Option("train", "--split", help="Which split of each sample store."),
    variant: str | None = typer.Option(None, "--variant", help="For A/B stages: which one."),
    seed: int = typer.Option(0, "--seed", help="Seed for --head."),
    epoch: int = typer.Option(0, "--epoch", help="Epoch for --head."),
    head: int = typer.Option(0, "--head", help="Also show the epoch's first N samples."),
    as_json: bool = JsonOption,
) -> None:
    """Show a stage's mixture plan: each dataset's size, weight, share and exact count in
    one epoch (docs/concepts/mixtures.md explains the arithmetic)."""
    _require_data_extra()
    from stagewise.release import open_release
    from stagewise.release.loading import load_stage_data

    loaded = load_stage_data(open_release(repo), stage, variant=variant, split=split, record=False)
    mixture = loaded.plan
    total = mixture.total
    rows = []
    for entry, planned in zip(mixture.entries, _enabled(loaded.stage_plan), strict=True):
        rows.append(
            {
                "dataset": entry.name,
                "samples": entry.size,
                "duplicate": planned.duplicate,
                "cap": planned.cap,
                "weight": entry.weight,
                "count": entry.count,
                "share_of_epoch": entry.count / total if total else 0.0,
                "passes": entry.count / entry.size if entry.size else 0.0,
            }
        )
    first: list[list[Any]] = []
    if head:
        datasets, indices = loaded.sampler(seed, epoch).indices(0, head)
        first = [[mixture.entries[d].name, int(i)] for d, i in zip(datasets, indices, strict=True)]
    info = {
        "stage": loaded.resolution.stage,
        "config_file": loaded.resolution.config_file,
        "split": split,
        "shuffle": mixture.shuffle,
        "total": total,
        "fingerprint": mixture.fingerprint,
        "datasets": rows,
        "head": first,
    }
    if as_json:
        print_json(info)
        return
    columns = ["dataset", "samples", "duplicate", "cap", "weight", "count", "of epoch", "passes"]
    body = [
        [
            r["dataset"],
            f"{r['samples']:,}",
            f"{r['duplicate']:g}",
            r["cap"],
            r["weight"],
            f"{r['count']:,}",
            f"{r['share_of_epoch']:.1%}",
            f"{r['passes']:.2f}",
        ]
        for r in rows
    ]
    title = f"{info['stage'] or 'default'}  ({info['config_file']}, split {split})"
    console.print(table(title, columns, body))
    console.print(
        f"epoch: {total:,} samples; shuffle: {mixture.shuffle}; plan {mixture.fingerprint[:12]}"
    )
    if first:
        console.print(
            table(
                f"first {len(first)} samples (seed {seed}, epoch {epoch})",
                ["dataset", "index"],
                first,
            )
        )


def _enabled(stage_plan: Any) -> list[Any]:
    return [d for d in stage_plan.datasets if d.enabled]
