# ruff: noqa: T201
"""Goal D1, preprocess once: seed 004's window workload at laptop scale.

Compares ``stagewise.data.preprocess.preprocess`` (transform ``timeseries``, node metadata,
``freq: 5min``, ``force=True`` on every run) with

- the vectorised-numpy floor: read the same Parquet with pyarrow, ``np.lexsort`` by
  (node, time), reshape to ``(nodes, steps)``, build the window index; also the floor plus
  writing its series as ``.npy`` with an fsync (what a store has to do as well);
- per-record Python loops (the seed's regime: ints from Arrow, and text lines parsed per
  record), timed on a slice of the records and extrapolated.

Every timed run is a fresh child process (so its peak RSS is its own), the work timed
inside the child after its imports. The raw records are generated once with
``stagewise.data.synth.synth_traffic(missing=0.0)`` and cached in the work folder.

    .venv/bin/python benchmarks/data_preprocess.py            # 20M records, about a minute
    .venv/bin/python benchmarks/data_preprocess.py --quick    # smoke run, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from _report import rate, run_child, table

CORES = os.cpu_count() or 1
SEED_RECORDS = 230_000_000  # seed 004's raw records
SEED_MINUTES = (50.0, 95.0)  # seed 004's preprocess, best and worst run
FREQ = 300
INPUT_LEN = OUTPUT_LEN = 12
RATIOS = {"train": 0.6, "val": 0.2, "test": 0.2}


# data -------------------------------------------------------------------------------------
def raw_data(workdir: Path, nodes: int, steps: int) -> Path:
    """``workdir/raw-NxT/`` with records.parquet and nodes.csv, generated once."""
    folder = workdir / f"raw-{nodes}x{steps}"
    done = folder / "done.json"
    if done.exists():
        return folder
    from stagewise.data.synth import synth_traffic

    shutil.rmtree(folder, ignore_errors=True)
    began = time.perf_counter()
    result = synth_traffic(folder, nodes=nodes, steps=steps, missing=0.0, seed=0)
    done.write_text(json.dumps({"rows": result.rows, "seconds": time.perf_counter() - began}))
    return folder


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# children ---------------------------------------------------------------------------------
def _rss_now_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _config(raw: Path, output: Path) -> Any:
    from stagewise.config.preprocess import PreprocessConfig, TimeSeriesSettings

    return PreprocessConfig(
        source=str(raw / "records.parquet"),
        output=str(output),
        transform="timeseries",
        timeseries=TimeSeriesSettings(
            meta=str(raw / "nodes.csv"),
            freq="5min",
            input_len=INPUT_LEN,
            output_len=OUTPUT_LEN,
        ),
    )


def child_stagewise(raw: Path, output: Path) -> dict[str, Any]:
    from stagewise.data.preprocess import preprocess

    config = _config(raw, output)
    base_rss = _rss_now_kib()
    cpu, began = time.process_time(), time.perf_counter()
    result = preprocess(config, force=True)
    seconds = time.perf_counter() - began
    return {
        "seconds": seconds,
        "cpu": time.process_time() - cpu,
        "records": result.records,
        "windows": len(result.store),
        "base_rss_kib": base_rss,
    }


def _splits(steps: int) -> list[tuple[int, int]]:
    """(first step, windows) per split, as stagewise.data.timeseries.chronological_splits."""
    train = round(RATIOS["train"] * steps)
    test = round(RATIOS["test"] * steps)
    sizes = [train, steps - train - test, test]
    span, first, out = INPUT_LEN + OUTPUT_LEN, 0, []
    for size in sizes:
        out.append((first, max(size - span + 1, 0)))
        first += size
    return out


def floor_build(raw: Path, write: Path | None) -> dict[str, Any]:
    """The vectorised floor: read, lexsort by (node, time), reshape, window index."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    table = pq.read_table(raw / "records.parquet", columns=["node", "timestamp", "value"])
    node = table.column("node").to_numpy()
    seconds = table.column("timestamp").cast(pa.timestamp("s")).cast(pa.int64()).to_numpy()
    value = table.column("value").to_numpy()
    nodes = pa_csv.read_csv(raw / "nodes.csv").num_rows
    order = np.lexsort((seconds, node))
    steps = len(order) // nodes
    if steps * nodes != len(order):
        raise ValueError("the floor needs a complete grid (missing=0.0)")
    times = seconds[order].reshape(nodes, steps)
    start = int(times[0, 0])
    # the floor's checks: every node on the same grid, no gaps or duplicates
    if not (np.all(times[:, :1] == start) and np.all(np.diff(times[0]) == FREQ)):
        raise ValueError("records are not on one 5 min grid")
    series = value[order].reshape(nodes, steps)
    starts = np.concatenate(
        [np.arange(first, first + windows, dtype=np.int64) for first, windows in _splits(steps)]
    )
    if write is not None:
        write.mkdir(parents=True, exist_ok=True)
        path = write / "series.npy"
        np.save(path, series)
        np.save(write / "window_starts.npy", starts)
        for name in ("series.npy", "window_starts.npy"):
            with open(write / name, "rb+") as handle:
                os.fsync(handle.fileno())
    return {"records": len(order), "windows": len(starts)}


def child_floor(raw: Path, write: Path | None) -> dict[str, Any]:
    import numpy  # noqa: F401  (imports outside the timed part, as for stagewise)
    import pyarrow.parquet  # noqa: F401

    base_rss = _rss_now_kib()
    cpu, began = time.process_time(), time.perf_counter()
    out = floor_build(raw, write)
    return {
        "seconds": time.perf_counter() - began,
        "cpu": time.process_time() - cpu,
        "base_rss_kib": base_rss,
        **out,
    }


def child_python(raw: Path, limit: int, text: bool) -> dict[str, Any]:
    """The seed's regime: one Python step per record, the series as nested lists, a window
    index. ``text=False``: the records arrive as Python ints and floats (timestamps
    converted by Arrow beforehand: the leanest per-record loop). ``text=True``: each
    record is a CSV line ``node,YYYY-MM-DD HH:MM:SS,value`` split and parsed in Python,
    as the seed read its raw files (the lines are made before the clock starts)."""
    import datetime as dt

    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(raw / "records.parquet")
    batch = next(parquet.iter_batches(batch_size=limit, columns=["node", "timestamp", "value"]))
    meta_ids = pa_csv.read_csv(raw / "nodes.csv").column("node").to_pylist()
    lines: list[str] = []
    if text:
        stamps_text = batch.column(1).cast(pa.timestamp("s")).cast(pa.string()).to_pylist()
        lines = [
            f"{n},{t},{v!r}"
            for n, t, v in zip(
                batch.column(0).to_pylist(), stamps_text, batch.column(2).to_pylist(), strict=True
            )
        ]
    cpu, began = time.process_time(), time.perf_counter()
    if text:
        nodes, stamps, values = [], [], []
        for line in lines:
            node, stamp, value = line.split(",")
            nodes.append(int(node))
            moment = dt.datetime.fromisoformat(stamp).replace(tzinfo=dt.UTC)
            stamps.append(int(moment.timestamp()))
            values.append(float(value))
    else:
        nodes = batch.column(0).to_pylist()
        stamps = batch.column(1).cast(pa.timestamp("s")).cast(pa.int64()).to_pylist()
        values = batch.column(2).to_pylist()
    index = {node: i for i, node in enumerate(sorted(meta_ids))}
    start, end = min(stamps), max(stamps)
    steps = (end - start) // FREQ + 1
    grid = [[0.0] * len(index) for _ in range(steps)]
    seen = set()
    for node, stamp, value in zip(nodes, stamps, values, strict=True):
        offset = stamp - start
        if offset % FREQ:
            raise ValueError(f"record off the grid: {node} {stamp}")
        step, column = offset // FREQ, index[node]
        if (step, column) in seen:
            raise ValueError(f"duplicate reading: {node} {stamp}")
        seen.add((step, column))
        grid[step][column] = value
    span = INPUT_LEN + OUTPUT_LEN
    starts = list(range(steps - span + 1))
    series = np.asarray(grid, dtype=np.float32)
    return {
        "seconds": time.perf_counter() - began,
        "cpu": time.process_time() - cpu,
        "records": len(nodes),
        "windows": len(starts),
        "shape": list(series.shape),
    }


def child_cache_hit(raw: Path, output: Path, repeats: int) -> dict[str, Any]:
    from stagewise.data.preprocess import preprocess
    from stagewise.data.samples.store import open_store

    config = _config(raw, output)
    first = time.perf_counter()
    result = preprocess(config)
    first = time.perf_counter() - first
    if not result.cached:  # the source or the code changed since the timed runs: build
        first = time.perf_counter()
        result = preprocess(config)
        first = time.perf_counter() - first
        assert result.cached
    folder = Path(open_store(output).folder)
    meta = folder / "metadata.json"
    hits, reads, parses = [], [], []
    for _ in range(repeats):
        began = time.perf_counter()
        result = preprocess(config)
        hits.append(time.perf_counter() - began)
        assert result.cached
        began = time.perf_counter()
        meta.read_bytes()
        reads.append(time.perf_counter() - began)
        began = time.perf_counter()
        json.loads(meta.read_bytes())
        parses.append(time.perf_counter() - began)
    return {
        "first_hit": first,
        "hit": statistics.median(hits),
        "read": statistics.median(reads),
        "read_parse": statistics.median(parses),
        "metadata_bytes": meta.stat().st_size,
    }


def child_main(mode: str, options: dict[str, Any]) -> None:
    raw = Path(options["raw"])
    if mode == "stagewise":
        out = child_stagewise(raw, Path(options["output"]))
    elif mode == "floor":
        out = child_floor(raw, Path(options["write"]) if options.get("write") else None)
    elif mode == "python":
        out = child_python(raw, int(options["limit"]), bool(options["text"]))
    elif mode == "cache_hit":
        out = child_cache_hit(raw, Path(options["output"]), int(options["repeats"]))
    else:
        raise SystemExit(f"unknown child mode {mode}")
    out["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(out))


# report -----------------------------------------------------------------------------------


def med(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"


def mib(kib: float) -> str:
    return f"{kib / 1024:.0f} MiB"


def measure_size(
    workdir: Path, nodes: int, steps: int, runs: int, with_floor: bool
) -> dict[str, Any]:
    raw = raw_data(workdir, nodes, steps)
    output = workdir / f"store-{nodes}x{steps}"
    floor_out = workdir / "floor-out"
    found: dict[str, list[dict[str, Any]]] = {"stagewise": [], "floor": [], "floor_write": []}
    for _ in range(runs):  # interleaved, so that a slow spell of the disk hits both
        found["stagewise"].append(
            run_child(__file__, "stagewise", raw=str(raw), output=str(output))
        )
        if with_floor:
            found["floor"].append(run_child(__file__, "floor", raw=str(raw)))
            found["floor_write"].append(
                run_child(__file__, "floor", raw=str(raw), write=str(floor_out))
            )
    shutil.rmtree(floor_out, ignore_errors=True)
    return {"raw": raw, "output": output, **found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/stagewise-bench")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--runs", type=int, default=None, help="runs per measurement")
    parser.add_argument("--runs-large", type=int, default=None, help="runs at the large size")
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, json.loads(args.options))
        return

    if args.quick:
        workdir = Path(args.workdir) / "quick"
        large, small, slice_records = (40, 2500), (40, 625), 20_000
        runs = args.runs or 2
        runs_large = args.runs_large or runs
        hit_repeats = 5
    else:
        workdir = Path(args.workdir)
        large, small, slice_records = (2000, 10_000), (2000, 2500), 200_000
        runs = args.runs or 5
        runs_large = args.runs_large or runs
        hit_repeats = 21
    workdir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    print(f"# data_preprocess: {CORES} cores, workdir {workdir}, runs {runs} (large {runs_large})")

    big = measure_size(workdir, *large, runs_large, with_floor=True)
    little = measure_size(workdir, *small, runs, with_floor=False)
    python_runs = {
        text: [
            run_child(__file__, "python", raw=str(big["raw"]), limit=slice_records, text=text)
            for _ in range(runs)
        ]
        for text in (False, True)
    }
    hit = run_child(
        __file__, "cache_hit", raw=str(big["raw"]), output=str(big["output"]), repeats=hit_repeats
    )

    records = big["stagewise"][0]["records"]
    windows = big["stagewise"][0]["windows"]
    sw_s, floor_s = med(big["stagewise"], "seconds"), med(big["floor"], "seconds")
    floor_w_s = med(big["floor_write"], "seconds")
    sw_rate, floor_rate, floor_w_rate = records / sw_s, records / floor_s, records / floor_w_s
    py_rates = {
        text: group[0]["records"] / med(group, "seconds") for text, group in python_runs.items()
    }
    seed_s = SEED_RECORDS / sw_rate

    def row(label: str, seconds: float, speed: float, cpu: float) -> list[str]:
        return [
            label,
            f"{seconds:.2f} s",
            rate(speed),
            rate(speed / CORES),
            f"{cpu / seconds:.2f}",
            "1.00x" if speed == sw_rate else f"{sw_rate / speed:.2f}x",
        ]

    rows = [
        row(f"stagewise preprocess ({records:,} records)", sw_s, sw_rate,
            med(big["stagewise"], "cpu")),
        row("floor: pyarrow read + lexsort + reshape + window index", floor_s, floor_rate,
            med(big["floor"], "cpu")),
        row("floor + np.save series + fsync", floor_w_s, floor_w_rate,
            med(big["floor_write"], "cpu")),
    ]  # fmt: skip
    for text, group in python_runs.items():
        kind = "text lines parsed" if text else "ints from Arrow"
        label = f"per-record Python, {kind} ({slice_records // 1000}k slice; extrapolated)"
        extrapolated = records / py_rates[text]
        rows.append(row(label, extrapolated, py_rates[text], med(group, "cpu") * extrapolated
                        / med(group, "seconds")))  # fmt: skip
    print()
    print(
        table(
            f"D1 preprocess, {large[0]} nodes x {large[1]} steps = {records:,} records, "
            f"{windows:,} windows (median of {runs_large}; python loops median of {runs})",
            ["path", "time", "records/s", "records/s/core", "cores used", "ratio: stagewise / it"],
            rows,
        )
    )

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    seed_rows = [
        ["230M records, stagewise (extrapolated)", minutes(seed_s), "<= 4 min",
         verdict(seed_s <= 240)],
        ["230M records, floor (extrapolated)", minutes(SEED_RECORDS / floor_rate), "", ""],
        ["230M records, per-record Python ints / text (extrap.)",
         f"{minutes(SEED_RECORDS / py_rates[False])} / {minutes(SEED_RECORDS / py_rates[True])}",
         "", ""],
        ["vs seed 004 (50-95 min)",
         f"{SEED_MINUTES[0] * 60 / seed_s:.0f}x - {SEED_MINUTES[1] * 60 / seed_s:.0f}x faster",
         ">= 12x (vs best run)", verdict(SEED_MINUTES[0] * 60 / seed_s >= 12)],
        ["vs floor, per core", f"{sw_rate / floor_rate:.2f}x", ">= 0.7x",
         verdict(sw_rate / floor_rate >= 0.7)],
        ["records/s/core", rate(sw_rate / CORES), ">= 1.0M/s", verdict(sw_rate / CORES >= 1e6)],
        ["vs per-record Python (ints), per core", f"{sw_rate / py_rates[False]:.0f}x", ">= 35x",
         verdict(sw_rate / py_rates[False] >= 35)],
        ["vs per-record Python (text), per core", f"{sw_rate / py_rates[True]:.0f}x", ">= 35x",
         verdict(sw_rate / py_rates[True] >= 35)],
    ]  # fmt: skip
    print()
    print(table("D1 against the goals", ["what", "measured", "goal", "verdict"], seed_rows))

    rss_rows = []
    for group in (little, big):
        recs = group["stagewise"][0]["records"]
        rss = med(group["stagewise"], "maxrss_kib")
        base = med(group["stagewise"], "base_rss_kib")
        floor_rss = med(group["floor"], "maxrss_kib") if group["floor"] else None
        rss_rows.append(
            [
                f"{recs:,} records",
                f"{med(group['stagewise'], 'seconds'):.2f} s",
                mib(rss),
                mib(rss - base),
                mib(floor_rss) if floor_rss else "-",
                f"{(rss - base) * 1024 / recs:.1f} B" if recs else "-",
            ]
        )
    print()
    print(
        table(
            "Peak RSS of one preprocess (child process, ru_maxrss; 'after imports' subtracts "
            "the RSS before the call)",
            ["size", "stagewise time", "peak RSS", "above imports", "floor peak RSS", "per record"],
            rss_rows,
        )
    )

    version = Path((big["output"] / "LATEST").read_text().strip())
    store_bytes = folder_bytes(big["output"] / version)
    payload = records * 4
    seed_layout = windows * (INPUT_LEN + OUTPUT_LEN) * large[0] * 4
    raw_bytes = (big["raw"] / "records.parquet").stat().st_size
    size_rows = [
        ["store version folder", f"{store_bytes / 2**20:.1f} MiB", "1.00x"],
        ["raw numeric payload (records x 4 B float32)", f"{payload / 2**20:.1f} MiB",
         f"{store_bytes / payload:.2f}x"],
        [
            f"seed layout: a row per window, binary ({INPUT_LEN}+{OUTPUT_LEN}) x nodes x 4 B",
            f"{seed_layout / 2**30:.2f} GiB",
            f"{store_bytes / seed_layout:.3f}x ({seed_layout / store_bytes:.0f}x smaller)",
        ],
        ["raw records.parquet (snappy, 4 columns)", f"{raw_bytes / 2**20:.1f} MiB",
         f"{store_bytes / raw_bytes:.2f}x"],
    ]  # fmt: skip
    print()
    print(table("Store size", ["what", "bytes", "ratio: store / it"], size_rows))

    hit_rows = [
        ["preprocess again, unchanged (cache hit), warm", f"{hit['hit'] * 1e3:.2f} ms", "1.00x"],
        ["first cache hit in a fresh process", f"{hit['first_hit'] * 1e3:.2f} ms", ""],
        [
            f"read metadata.json alone ({hit['metadata_bytes']:,} B)",
            f"{hit['read'] * 1e3:.3f} ms",
            f"{hit['hit'] / hit['read']:.0f}x",
        ],
        [
            "read + json.loads metadata.json",
            f"{hit['read_parse'] * 1e3:.3f} ms",
            f"{hit['hit'] / hit['read_parse']:.0f}x",
        ],
    ]
    print()
    print(
        table(
            f"Cache hit (median of {hit_repeats}, in one process)",
            ["what", "time", "ratio: cache hit / it"],
            hit_rows,
        )
    )
    print(f"\n# total {time.perf_counter() - began:.0f} s")
    if args.json:
        figures = {
            "records": records,
            "windows": windows,
            "stagewise_s": sw_s,
            "floor_s": floor_s,
            "floor_write_s": floor_w_s,
            "python_rate_ints": py_rates[False],
            "python_rate_text": py_rates[True],
            "stagewise_runs": [r["seconds"] for r in big["stagewise"]],
            "floor_runs": [r["seconds"] for r in big["floor"]],
            "rss_kib": {
                "small": med(little["stagewise"], "maxrss_kib"),
                "large": med(big["stagewise"], "maxrss_kib"),
            },
            "store_bytes": store_bytes,
            "cache_hit": hit,
        }
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
