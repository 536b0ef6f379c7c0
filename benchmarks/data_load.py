# ruff: noqa: T201
"""Goals D2, D4 and D6: loading a sample store.

D2, time to first batch: ``open_store`` + ``store.split("train").take(range(32))`` in a
fresh process, on the windows stores of 5M and 20M records (seed 004's workload, as
``benchmarks/data_preprocess.py`` builds them; built here if missing), warm and with the
store's files dropped from the page cache first; against re-preprocessing the raw
records in every run (the seed's old way).

D4 and D6, random access, warm: a table store (``StoreWriter``) with one fixed-size tensor
column of 64 float32 (256 B a row), which the writer keeps as one contiguous raw file per
split (``columns/*.bin``, memory-mapped as a plain ndarray); ``store.take(idx)`` with
batches of 256 random rows against ``np.load(mmap_mode="r")[idx]`` on the same bytes as
``.npy``, pyarrow IPC ``take`` on a memory-mapped file with the same column (both the Arrow
result and the Arrow result converted to numpy), and, from a separate venv
(``--peers-venv``, created and filled with pip on first use), Hugging Face ``datasets``
and LitData on the same data and indices; ``store[i]`` against ``memmap[i]`` per row.
Diagnostic rows index the store's own mapped column (``store.column("x")``) and a plain
ndarray view of the ``.npy`` map directly, to separate the store's bookkeeping from the
cost of the gather itself.

    .venv/bin/python benchmarks/data_load.py            # about two minutes (more on first use)
    .venv/bin/python benchmarks/data_load.py --quick    # smoke run, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _report import peer_venv, rate, run_child, table, verdict

CORES = os.cpu_count() or 1
BATCH = 256
FIRST_BATCH = 32
DIM = 64  # float32 per row: 256 B


# windows stores (D2) ------------------------------------------------------------------------
def raw_data(workdir: Path, nodes: int, steps: int) -> Path:
    """``workdir/raw-NxT/``: the same cache as benchmarks/data_preprocess.py."""
    folder = workdir / f"raw-{nodes}x{steps}"
    if (folder / "done.json").exists():
        return folder
    from stagewise.data.synth import synth_traffic

    shutil.rmtree(folder, ignore_errors=True)
    result = synth_traffic(folder, nodes=nodes, steps=steps, missing=0.0, seed=0)
    (folder / "done.json").write_text(json.dumps({"rows": result.rows}))
    return folder


def preprocess_config(raw: Path, output: Path) -> Any:
    from stagewise.config.preprocess import PreprocessConfig, TimeSeriesSettings

    return PreprocessConfig(
        source=str(raw / "records.parquet"),
        output=str(output),
        transform="timeseries",
        timeseries=TimeSeriesSettings(meta=str(raw / "nodes.csv"), freq="5min"),
    )


def windows_store(workdir: Path, nodes: int, steps: int) -> tuple[Path, Path]:
    """(raw folder, store root); preprocess finds the store in its cache when unchanged."""
    from stagewise.data.preprocess import preprocess

    raw = raw_data(workdir, nodes, steps)
    root = workdir / f"store-{nodes}x{steps}"
    preprocess(preprocess_config(raw, root))
    return raw, root


def evict(folder: Path) -> None:
    """Drop a folder's files from the page cache (POSIX_FADV_DONTNEED; no root needed)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def child_first_batch(root: str) -> dict[str, Any]:
    began = time.perf_counter()
    from stagewise.data.samples.store import open_store

    imported = time.perf_counter()
    store = open_store(root)
    batch = store.split("train").take(range(FIRST_BATCH))
    done = time.perf_counter()
    return {
        "imports": imported - began,
        "open_first_batch": done - imported,
        "shape": list(batch["x"].shape),
    }


def child_reprocess(raw: str, output: str) -> dict[str, Any]:
    began = time.perf_counter()
    from stagewise.data.preprocess import preprocess

    imported = time.perf_counter()
    result = preprocess(preprocess_config(Path(raw), Path(output)), force=True)
    batch = result.store.split("train").take(range(FIRST_BATCH))
    done = time.perf_counter()
    return {
        "imports": imported - began,
        "open_first_batch": done - imported,
        "shape": list(batch["x"].shape),
    }


def first_batch(workdir: Path, sizes: list[tuple[int, int]], runs: int) -> list[list[str]]:
    rows = []
    for nodes, steps in sizes:
        raw, root = windows_store(workdir, nodes, steps)
        version = root / (root / "LATEST").read_text().strip()
        scratch = workdir / f"reprocess-{nodes}x{steps}"
        found: dict[str, list[dict[str, Any]]] = {"warm": [], "cold": [], "reprocess": []}
        for _ in range(runs):
            found["warm"].append(run_child(__file__, "first_batch", root=str(root)))
            evict(version)
            found["cold"].append(run_child(__file__, "first_batch", root=str(root)))
            found["reprocess"].append(
                run_child(__file__, "reprocess", raw=str(raw), output=str(scratch))
            )
        shutil.rmtree(scratch, ignore_errors=True)
        records = nodes * steps
        load_s = statistics.median(r["open_first_batch"] for r in found["warm"])
        for kind in ("warm", "cold", "reprocess"):
            inside = statistics.median(r["open_first_batch"] for r in found[kind])
            wall = statistics.median(r["child_wall"] for r in found[kind])
            imports = statistics.median(r["imports"] for r in found[kind])
            label = {
                "warm": "open + first batch, warm",
                "cold": "open + first batch, store evicted from page cache",
                "reprocess": "re-preprocess raw + first batch (seed's way)",
            }[kind]
            rows.append(
                [
                    f"{records:,} records",
                    label,
                    f"{inside * 1e3:.1f} ms",
                    f"{imports * 1e3:.0f} ms",
                    f"{wall * 1e3:.0f} ms",
                    f"{inside / load_s:.1f}x" if kind == "reprocess" else "-",
                    (verdict(inside <= 0.050) if kind != "reprocess" else "-"),
                ]
            )
        warm_wall = statistics.median(r["child_wall"] for r in found["warm"])
        floor = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import numpy, pyarrow"], check=True)
            floor.append(time.perf_counter() - start)
        rows.append(
            [
                f"{records:,} records",
                "reference: python -c 'import numpy, pyarrow'",
                "",
                "",
                f"{statistics.median(floor) * 1e3:.0f} ms",
                "",
                "",
            ]
        )
        re_wall = statistics.median(r["child_wall"] for r in found["reprocess"])
        rows.append(
            [
                f"{records:,} records",
                "whole fresh process: re-preprocess / load",
                "",
                "",
                "",
                f"{re_wall / warm_wall:.1f}x",
                "",
            ]
        )
    return rows


# table stores (D4, D6) -------------------------------------------------------------------
TAKE = "stagewise store.take(idx)"
TAKE_OWN = "diagnostic: the store's mapped column, store.column('x')[idx]"
MEMMAP = "np.load(mmap_mode='r')[idx]"
TAKE_PLAIN = "diagnostic: the same .npy map as a plain ndarray [idx]"
ARROW = "pyarrow IPC (mmap) Table.take(idx) -> Arrow table"
ARROW_NUMPY = "pyarrow IPC take + values.to_numpy (no copy) -> ndarray"
ARROW_NAIVE = "pyarrow IPC take + combine_chunks/flatten/to_numpy -> ndarray"
ROW = "stagewise store[i] (dict of the row)"
ROW_OWN = "diagnostic: the store's mapped column [i]"
ROW_MEMMAP = "np.load(mmap_mode='r')[i]"
ROW_PLAIN = "diagnostic: the same .npy map as a plain ndarray [i]"


def store_layout(store: Any) -> str:
    """How the store holds its columns, from its metadata: "contiguous files" or shards."""
    meta = store.metadata
    arrays = [c.name for c in meta.columns if c.storage == "array"]
    in_shards = [c.name for c in meta.columns if c.storage == "shard"]
    parts = []
    if arrays:
        parts.append(
            f"column(s) {', '.join(arrays)} as one contiguous raw file per split "
            f"({len(meta.splits)} split(s), memory-mapped)"
        )
    if in_shards or meta.shards:
        parts.append(
            f"column(s) {', '.join(in_shards) or '-'} in {len(meta.shards)} Arrow shard(s)"
        )
    return "; ".join(parts) or "no columns"


def table_data(workdir: Path, rows: int) -> dict[str, Path]:
    """The same rows three ways: a stagewise table store, a .npy and an Arrow IPC file."""
    import numpy as np
    import pyarrow as pa

    folder = workdir / f"table-{rows}x{DIM}"
    paths = {
        "store": folder / "store",
        "npy": folder / "rows.npy",
        "ipc": folder / "rows.arrow",
        "indices": folder / "indices.npy",
    }
    if (folder / "done.json").exists():
        try:
            from stagewise.data.samples.store import open_store

            store = open_store(paths["store"])
            # a store written by an older writer (shards for numeric columns): build again
            if len(store) == rows and not store.metadata.shards:
                return paths
        except Exception:  # a store of an older format: build again
            pass
    from stagewise.data.samples.writer import StoreWriter

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    values = rng.standard_normal((rows, DIM), dtype=np.float32)
    np.save(paths["npy"], values)
    column = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), DIM)
    batch = pa.record_batch([column], names=["x"])
    with pa.OSFile(str(paths["ipc"]), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as out:
        out.write_batch(batch)
    with StoreWriter(paths["store"], f"bench-table-{rows}x{DIM}", kind="table") as writer:
        for start in range(0, rows, 65_536):
            writer.add_batch(batch.slice(start, 65_536))
        writer.commit()
    (folder / "done.json").write_text(json.dumps({"rows": rows}))
    return paths


def warm_files(paths: list[Path]) -> None:
    buffer = bytearray(16 << 20)
    for path in paths:
        for file in [path] if path.is_file() else sorted(path.rglob("*")):
            if file.is_file():
                with open(file, "rb", buffering=0) as handle:
                    while handle.readinto(buffer):
                        pass


def random_access(paths: dict[str, Path], rows: int, batches: int, runs: int) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa

    from stagewise.data.samples.store import open_store

    rng = np.random.default_rng(1234)
    indices = rng.integers(0, rows, size=(batches, BATCH), dtype=np.int64)
    np.save(paths["indices"], indices)
    warm_files([paths["store"], paths["npy"], paths["ipc"]])
    store = open_store(paths["store"])
    own = store.column("x")  # the store's mapped column: a view of its file, no copy
    mapped = np.load(paths["npy"], mmap_mode="r")
    plain = mapped.view(np.ndarray)  # the same map without np.memmap's subclass hooks
    arrow = pa.ipc.open_file(pa.memory_map(str(paths["ipc"]), "r")).read_all()
    column = arrow.column("x")

    def ipc_numpy(idx: np.ndarray) -> np.ndarray:
        """The leanest conversion found: the taken list array's values buffer as numpy,
        no copy (``flatten()`` and ``combine_chunks()`` each cost about as much as the
        take itself here)."""
        taken = column.take(idx)
        chunk = taken.chunk(0) if taken.num_chunks == 1 else taken.combine_chunks()
        return chunk.values.to_numpy(zero_copy_only=True).reshape(len(idx), DIM)

    def ipc_numpy_naive(idx: np.ndarray) -> np.ndarray:
        taken = column.take(idx).combine_chunks()
        return taken.flatten().to_numpy().reshape(len(idx), DIM)

    batch_methods = {
        TAKE: lambda idx: store.take(idx)["x"],
        TAKE_OWN: lambda idx: own[idx],
        MEMMAP: lambda idx: mapped[idx],
        TAKE_PLAIN: lambda idx: plain[idx],
        ARROW: lambda idx: arrow.take(idx),
        ARROW_NUMPY: ipc_numpy,
        ARROW_NAIVE: ipc_numpy_naive,
    }
    check = indices[0]
    assert isinstance(own, np.ndarray) and not isinstance(own, np.memmap)
    assert np.array_equal(store.take(check)["x"], mapped[check])
    assert np.array_equal(own[check], mapped[check])
    assert np.array_equal(ipc_numpy(check), mapped[check])
    assert np.array_equal(ipc_numpy_naive(check), mapped[check])
    per_row = indices.reshape(-1)[: min(indices.size, 100_000)]
    row_methods = {
        ROW: lambda i: store[i],
        ROW_OWN: lambda i: own[i],
        ROW_MEMMAP: lambda i: mapped[i],
        ROW_PLAIN: lambda i: plain[i],
    }
    results: dict[str, list[float]] = {name: [] for name in [*batch_methods, *row_methods]}
    for method in batch_methods.values():  # warm-up
        for idx in indices[:50]:
            method(idx)
    for run in range(runs):
        order = list(batch_methods.items())
        order = order[run % len(order) :] + order[: run % len(order)]
        for name, method in order:
            began = time.perf_counter()
            for idx in indices:
                method(idx)
            results[name].append(indices.size / (time.perf_counter() - began))
        for name, method in row_methods.items():
            positions = per_row.tolist()
            began = time.perf_counter()
            for i in positions:
                method(i)
            results[name].append(len(positions) / (time.perf_counter() - began))
    return {
        "median": {name: statistics.median(v) for name, v in results.items()},
        "runs": results,
        "layout": store_layout(store),
        "shards": len(store.metadata.shards),
        "per_row": len(per_row),
    }


# peers: Hugging Face datasets, LitData (their own venv) -------------------------------------
def peers_python(venv: Path, install: bool) -> tuple[str | None, str]:
    return peer_venv(
        venv,
        ["datasets", "litdata", "numpy", "pyarrow"],
        "datasets, litdata, numpy, pyarrow",
        install,
    )


def child_peers(options: dict[str, Any]) -> dict[str, Any]:
    """Runs under the peers venv: HF datasets and LitData on the same rows and indices."""
    import numpy as np

    values = np.load(options["npy"], mmap_mode="r")
    indices = np.load(options["indices"])
    runs, folder = int(options["runs"]), Path(options["folder"])
    slow = indices[: int(options["slow_batches"])]
    slowest = indices[: int(options["litdata_batches"])]
    out: dict[str, Any] = {"versions": {}, "errors": {}}
    methods: dict[str, tuple[Any, np.ndarray]] = {}
    try:
        import datasets

        out["versions"]["datasets"] = datasets.__version__
        datasets.disable_progress_bars()
        began = time.perf_counter()
        memory = datasets.Dataset.from_dict({"x": np.asarray(values)}).with_format("numpy")
        out["hf_from_dict_s"] = time.perf_counter() - began
        saved = folder / "hf"
        if not (saved / "dataset_info.json").exists():
            shutil.rmtree(saved, ignore_errors=True)
            datasets.Dataset.from_dict({"x": np.asarray(values)}).save_to_disk(str(saved))
        disk = datasets.load_from_disk(str(saved)).with_format("numpy")
        assert np.array_equal(memory[indices[0]]["x"], values[indices[0]])
        assert np.array_equal(disk[indices[0]]["x"], values[indices[0]])
        methods["HF datasets from_dict, numpy, ds[idx]"] = (lambda i: memory[i]["x"], slow)
        methods["HF datasets load_from_disk (mmap), ds[idx]"] = (lambda i: disk[i]["x"], slow)
    except Exception as exc:  # report, do not fake
        out["errors"]["datasets"] = repr(exc)
    try:
        import litdata
        from litdata.streaming.writer import BinaryWriter

        out["versions"]["litdata"] = litdata.__version__
        chunks = folder / "litdata"
        if not (chunks / "index.json").exists():
            shutil.rmtree(chunks, ignore_errors=True)
            began = time.perf_counter()
            writer = BinaryWriter(str(chunks), chunk_bytes="64MB")
            for i in range(len(values)):
                writer.add_item(i, np.array(values[i]))
            writer.done()
            writer.merge()
            out["litdata_write_s"] = time.perf_counter() - began
        # batch_decode=False: the default ("auto") decodes a block of neighbours for every
        # random item, which makes random reads about 10x slower here.
        lit = litdata.StreamingDataset(str(chunks), batch_decode=False)
        assert np.array_equal(lit[int(indices[0][0])], values[indices[0][0]])

        def lit_batch(idx: np.ndarray) -> np.ndarray:
            return np.stack([lit[i] for i in idx.tolist()])

        methods["LitData StreamingDataset ds[i] x 256, stacked"] = (lit_batch, slowest)
        stream_rows = int(options["stream_rows"])

        def lit_stream() -> float:
            loader = litdata.StreamingDataLoader(
                litdata.StreamingDataset(str(chunks), shuffle=True), batch_size=BATCH
            )
            began, seen = time.perf_counter(), 0
            for batch in loader:
                seen += len(batch)
                if seen >= stream_rows:
                    break
            return seen / (time.perf_counter() - began)

        out["litdata_stream"] = statistics.median(lit_stream() for _ in range(runs))
        out["stream_rows"] = stream_rows
    except Exception as exc:
        out["errors"]["litdata"] = repr(exc)
    medians = {}
    for name, (method, batches) in methods.items():
        for idx in batches[:5]:
            method(idx)
        found = []
        for _ in range(runs):
            began = time.perf_counter()
            for idx in batches:
                method(idx)
            found.append(batches.size / (time.perf_counter() - began))
        medians[name] = statistics.median(found)
    out["median"] = medians
    out["rows"] = {"hf": int(slow.size), "litdata": int(slowest.size)}
    return out


def stream_reference(paths: dict[str, Path], rows: int, runs: int) -> float:
    """stagewise: shuffled batches of 256 over the whole store, as rows/s (the rows
    LitData's shuffled streaming loader is compared with)."""
    import numpy as np

    from stagewise.data.samples.store import open_store

    store = open_store(paths["store"])
    order = np.random.default_rng(7).permutation(len(store))[:rows]
    for start in range(0, len(order), BATCH):  # warm-up: maps the pages of this process
        store.take(order[start : start + BATCH])
    found = []
    for _ in range(runs):
        began = time.perf_counter()
        for start in range(0, len(order), BATCH):
            store.take(order[start : start + BATCH])
        found.append(len(order) / (time.perf_counter() - began))
    return statistics.median(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/stagewise-bench")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--rows", type=int, default=None, help="rows of the table store")
    parser.add_argument(
        "--peers",
        choices=["install", "auto", "skip"],
        default=None,
        help="HF datasets and LitData: install their venv if needed (default), use it "
        "only if it is ready, or skip (default with --quick: their imports alone take ~10 s)",
    )
    parser.add_argument("--peers-venv", default=None, help="default: WORKDIR/peers-venv")
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        options = json.loads(args.options)
        if args.child == "first_batch":
            answer = child_first_batch(options["root"])
        elif args.child == "reprocess":
            answer = child_reprocess(options["raw"], options["output"])
        elif args.child == "peers":
            answer = child_peers(options)
        else:
            raise SystemExit(f"unknown child mode {args.child}")
        print(json.dumps(answer))
        return

    base = Path(args.workdir)
    if args.quick:
        workdir = base / "quick"
        sizes, rows, batches = [(40, 625), (40, 2500)], args.rows or 20_000, 100
        runs, peers, slow_batches, stream_rows = args.runs or 2, args.peers or "skip", 4, 2_000
    else:
        workdir = base
        sizes, rows, batches = [(2000, 2500), (2000, 10_000)], args.rows or 2_000_000, 2000
        runs, peers, slow_batches, stream_rows = args.runs or 5, args.peers or "install", 40, 50_000
    workdir.mkdir(parents=True, exist_ok=True)
    venv = Path(args.peers_venv) if args.peers_venv else base / "peers-venv"
    began = time.perf_counter()
    print(f"# data_load: {CORES} cores, workdir {workdir}, runs {runs}")

    d2 = first_batch(workdir, sizes, runs)
    print()
    print(
        table(
            f"D2 time to first batch ({FIRST_BATCH} windows of the train split) in a fresh "
            f"process; median of {runs}",
            ["store", "path", "in child", "imports", "child total", "ratio", "goal <= 50 ms"],
            d2,
        )
    )

    paths = table_data(workdir, rows)
    found = random_access(paths, rows, batches, runs)
    m, per_run = found["median"], found["runs"]
    sw = m[TAKE]

    def spread(mine: str, other: str) -> str:
        """The lowest and highest ratio of single runs (the runs are interleaved)."""
        ratios = [a / b for a, b in zip(per_run[mine], per_run[other], strict=True)]
        return f"{min(ratios):.2f}-{max(ratios):.2f}x"

    refs = [
        (TAKE_OWN, ""),
        (MEMMAP, ">= 0.7x"),
        (TAKE_PLAIN, ""),
        (ARROW, ">= 1.8x"),
        (ARROW_NUMPY, ">= 1.8x"),
        (ARROW_NAIVE, ""),
    ]
    d4 = [[TAKE, rate(sw), f"{sw / BATCH / 1e3:.1f}k", "1.00x", "", "", ""]]
    for name, goal in refs:
        ratio = sw / m[name]
        ok = "" if not goal else verdict(ratio >= float(goal.split()[1][:-1]))
        d4.append(
            [
                name,
                rate(m[name]),
                f"{m[name] / BATCH / 1e3:.1f}k",
                f"{ratio:.2f}x",
                spread(TAKE, name),
                goal,
                ok,
            ]
        )

    peer_note = ""
    python, status = (None, "skipped (--peers skip)")
    if peers != "skip":
        python, status = peers_python(venv, install=peers == "install")
    peer: dict[str, Any] = {}
    if python:
        peer = run_child(
            __file__,
            "peers",
            python=python,
            npy=str(paths["npy"]),
            indices=str(paths["indices"]),
            folder=str(workdir / f"peers-{rows}x{DIM}"),
            runs=runs,
            slow_batches=slow_batches,
            litdata_batches=max(1, slow_batches // 20),
            stream_rows=stream_rows,
        )
        for name, value in peer["median"].items():
            ratio = sw / value
            d4.append(
                [name, rate(value), f"{value / BATCH / 1e3:.2f}k", f"{ratio:.1f}x", "", "", ""]
            )
        peer_note = (
            f"peers {peer['versions']} ({status}); rows timed per run: {peer['rows']}. "
            "LitData has no batch take: ds[i] per row; it keeps one chunk (64 MB) mapped, "
            "so random reads across chunks remap a chunk each time"
        )
        if peer["errors"]:
            peer_note += f"; errors: {peer['errors']}"
    else:
        peer_note = f"HF datasets / LitData: {status}"
    print()
    print(
        table(
            f"D4 random batches of {BATCH}, warm; {rows:,} rows x {DIM} float32 (256 B); "
            f"{batches} batches, median of {runs}",
            [
                "path",
                "rows/s",
                "batches/s",
                "ratio: stagewise / it",
                "ratio, single runs",
                "goal",
                "verdict",
            ],
            d4,
        )
    )
    print(f"# store layout: {found['layout']}")
    print(
        "# like-for-like pyarrow comparison: 'take + values.to_numpy' (an ndarray, as "
        "store.take gives and a loader needs; the research note's pyarrow figure, 0.39x "
        "memmap, included a conversion to numpy). 'Table.take' stops at an Arrow table; the "
        "naive conversion is shown for scale, without a goal."
    )
    print(f"# {peer_note}")
    if peer.get("litdata_stream"):
        mine = stream_reference(paths, peer["stream_rows"], runs)
        print()
        print(
            table(
                f"LitData's own path: shuffled streaming, {peer['stream_rows']:,} rows in "
                "batches of 256 (one process, no workers); median of {runs}".replace(
                    "{runs}", str(runs)
                ),
                ["path", "rows/s", "stagewise / it"],
                [
                    ["stagewise store.take(shuffled batch)", rate(mine), "1.00x"],
                    [
                        "LitData StreamingDataLoader(shuffle=True)",
                        rate(peer["litdata_stream"]),
                        f"{mine / peer['litdata_stream']:.1f}x",
                    ],
                ],
            )
        )

    row_sw = m[ROW]
    d6 = [[ROW, rate(row_sw), "1.00x", "", "", ""]]
    for name in (ROW_OWN, ROW_MEMMAP, ROW_PLAIN):
        goal = ">= 1.0x (stretch 2x)" if name == ROW_MEMMAP else ""
        d6.append(
            [
                name,
                rate(m[name]),
                f"{row_sw / m[name]:.2f}x",
                spread(ROW, name),
                goal,
                verdict(row_sw / m[name] >= 1.0) if goal else "",
            ]
        )
    print()
    print(
        table(
            f"D6 per-row access, {found['per_row']:,} random rows, one call per row; "
            f"median of {runs}",
            ["path", "rows/s", "ratio: stagewise / it", "ratio, single runs", "goal", "verdict"],
            d6,
        )
    )
    print(
        "# np.load(mmap_mode='r') gives an np.memmap, whose subclass hooks run on every "
        "index; the store maps its files as plain ndarrays (the 'plain ndarray' row)"
    )
    print(f"\n# total {time.perf_counter() - began:.0f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"d2": d2, "random": found, "peers": peer}, indent=2, default=str)
        )


if __name__ == "__main__":
    main()
