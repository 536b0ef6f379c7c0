# ruff: noqa: T201
"""Goal D7, shuffle + weighted mixing, and the scale of the mixture order.

Throughput: 8 table stores (one fixed-size tensor column, 64 float32 = 256 B a row) with
sizes in the ratio of their weights 1..8; a weighted ``MixturePlan`` over them; batches of
256 from ``MixtureSampler.batches`` (shuffled), each gathered from the stores by
``stagewise.data.torch.MixtureDataset.gather`` (the batch grouped by dataset, each group
gathered from that store's mapped columns into a new array).

The goal's reference, single-source sequential batches, is taken from one store of the
same total size as ``store.iter_batches(256)`` with each batch copied into a new array
(``np.array``): within one split ``iter_batches`` yields views of the mapped file, which
cost no copy at all, while a loader hands torch a batch of its own. The like-for-like
reference is the same single store read in shuffled batches (``store.take`` of a
permutation): one source, the same random gather, no mixing. Also shown: the zero-copy
``iter_batches`` views, the sampler alone, the mixture unshuffled, and memory-mapped
``.npy`` floors.

Scale: ``MixturePlan`` of 8 entries totalling 1e6, 1e8 and 1e9 samples, world size 1000:
the time to build a ``MixtureSampler`` for a rank and get its first 256 indices, and the
memory that takes (tracemalloc peak): neither should grow with the epoch.

    .venv/bin/python benchmarks/data_mixing.py           # under a minute
    .venv/bin/python benchmarks/data_mixing.py --quick   # smoke run, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from _report import rate, table

from stagewise.data.order import MixtureEntry, MixturePlan, MixtureSampler
from stagewise.data.samples.store import SampleStore, open_store
from stagewise.data.samples.writer import StoreWriter

CORES = os.cpu_count() or 1
BATCH = 256
DIM = 64
SOURCES = 8
WEIGHTS = [float(i + 1) for i in range(SOURCES)]


# data -------------------------------------------------------------------------------------
def write_store(root: Path, key: str, values: np.ndarray) -> None:
    column = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), DIM)
    batch = pa.record_batch([column], names=["x"])
    with StoreWriter(root, key, kind="table") as writer:
        for start in range(0, len(values), 65_536):
            writer.add_batch(batch.slice(start, 65_536))
        writer.commit()


def build(workdir: Path, total: int) -> dict[str, Any]:
    """8 weighted stores, one single store of the same total, and the single one as .npy."""
    folder = workdir / f"mix-{total}x{DIM}"
    sizes = [round(total * w / sum(WEIGHTS)) for w in WEIGHTS]
    names = [f"source{i}" for i in range(SOURCES)]
    done = folder / "done.json"
    if done.exists() and json.loads(done.read_text()) == {"sizes": sizes}:
        try:
            return {
                "names": names,
                "sources": {n: open_store(folder / n) for n in names},
                "single": open_store(folder / "single"),
                "npy": folder / "single.npy",
                "sizes": sizes,
            }
        except Exception:  # a store of an older format: build again
            pass
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    values = rng.standard_normal((sum(sizes), DIM), dtype=np.float32)
    start = 0
    for name, size in zip(names, sizes, strict=True):
        write_store(folder / name, f"bench-{name}-{size}", values[start : start + size])
        start += size
    write_store(folder / "single", f"bench-single-{len(values)}", values)
    np.save(folder / "single.npy", values)
    done.write_text(json.dumps({"sizes": sizes}))
    return build(workdir, total)


def gatherer(
    plan: MixturePlan, sources: dict[str, SampleStore]
) -> tuple[Callable[[list[str], np.ndarray, np.ndarray], dict[str, Any]], str]:
    """``MixtureDataset.gather``: what a training loader runs for every batch."""
    from stagewise.data.torch import MixtureDataset

    dataset = MixtureDataset(plan, sources, batch_size=BATCH, seed=0, rank=0, world_size=1)
    return dataset.gather, "stagewise.data.torch.MixtureDataset.gather"


# throughput -------------------------------------------------------------------------------
MIXTURE = "mixture, shuffled: sampler + gather"
SEQUENTIAL = "single source, sequential, copied: store.iter_batches(256) + np.array"
SHUFFLED = "single source, shuffled: store.take(permuted batch)"
GOALS = {SEQUENTIAL: ">= 0.8x (as written)", SHUFFLED: "like-for-like (0.8x if applied)"}


def throughput(data: dict[str, Any], runs: int) -> tuple[dict[str, float], str, int, MixturePlan]:
    names, sources, single = data["names"], data["sources"], data["single"]
    sizes = dict(zip(names, data["sizes"], strict=True))
    weights = dict(zip(names, WEIGHTS, strict=True))
    plan = MixturePlan.from_counts(sizes, weights=weights, shuffle=True)
    plain = MixturePlan.from_counts(sizes, weights=weights, shuffle=False)
    gather, how = gatherer(plan, sources)
    mapped = np.load(data["npy"], mmap_mode="r")
    permutation = np.random.default_rng(3).permutation(len(single))

    def mixture(which: MixturePlan, fetch: bool) -> Callable[[], Iterator[Any]]:
        def run() -> Iterator[Any]:
            for datasets, indices in MixtureSampler(which, seed=0).batches(BATCH):
                yield gather(names, datasets, indices) if fetch else indices

        return run

    def single_sequential_copied() -> Iterator[Any]:
        for batch in single.iter_batches(BATCH):
            yield {name: np.array(values) for name, values in batch.items()}

    def single_shuffled() -> Iterator[Any]:
        for start in range(0, len(permutation), BATCH):
            yield single.take(permutation[start : start + BATCH])

    def memmap_shuffled() -> Iterator[Any]:
        for start in range(0, len(permutation), BATCH):
            yield mapped[permutation[start : start + BATCH]]

    def memmap_sequential() -> Iterator[Any]:
        for start in range(0, len(mapped), BATCH):
            yield np.array(mapped[start : start + BATCH])

    methods: dict[str, Callable[[], Iterator[Any]]] = {
        MIXTURE: mixture(plan, True),
        SEQUENTIAL: single_sequential_copied,
        SHUFFLED: single_shuffled,
        "single source, sequential, zero-copy views: store.iter_batches(256)": (
            lambda: single.iter_batches(BATCH)
        ),
        "sampler alone (indices, shuffled)": mixture(plan, False),
        "mixture, unshuffled: sampler + gather": mixture(plain, True),
        "floor: .npy memmap sequential slices, copied": memmap_sequential,
        "floor: .npy memmap, shuffled batch gather": memmap_shuffled,
    }
    check = next(iter(methods[MIXTURE]()))
    assert check["x"].shape == (BATCH, DIM)
    copied = next(iter(methods[SEQUENTIAL]()))["x"]
    assert copied.flags.owndata and copied.flags.writeable
    assert np.array_equal(copied, mapped[:BATCH])
    found: dict[str, list[float]] = {name: [] for name in methods}
    rows = {}
    for name, method in methods.items():  # warm-up: maps the files, fills the page cache
        rows[name] = sum(len(b["x"]) if isinstance(b, dict) else len(b) for b in method())
    for run in range(runs):
        order = list(methods.items())
        order = order[run % len(order) :] + order[: run % len(order)]
        for name, method in order:
            began = time.perf_counter()
            for _ in method():
                pass
            found[name].append(rows[name] / (time.perf_counter() - began))
    medians = {name: statistics.median(v) for name, v in found.items()}
    return {"median": medians, "runs": found}, how, plan.total, plan


# scale ------------------------------------------------------------------------------------
def scale_plan(total: int) -> MixturePlan:
    """8 entries in the weights' ratio; each source holds 2/3 of what it gives, so the
    epoch has a full pass and a partial (drawn) pass of every source."""
    counts = [int(total * w / sum(WEIGHTS)) for w in WEIGHTS]
    counts[-1] += total - sum(counts)
    entries = tuple(
        MixtureEntry(f"source{i}", max(1, c * 2 // 3), c, w)
        for i, (c, w) in enumerate(zip(counts, WEIGHTS, strict=True))
    )
    return MixturePlan(entries, shuffle=True)


def scale(totals: list[int], world: int, runs: int) -> list[dict[str, Any]]:
    out = []
    for total in totals:
        rank = world - 1

        def first_indices(total: int = total, rank: int = rank) -> np.ndarray:
            plan = scale_plan(total)
            sampler = MixtureSampler(plan, seed=0, epoch=3, rank=rank, world_size=world)
            _, indices = sampler.indices(0, BATCH)
            assert len(indices) == BATCH
            return indices

        first_indices()  # warm-up
        times, peaks = [], []
        for _ in range(runs):
            began = time.perf_counter()
            first_indices()
            times.append(time.perf_counter() - began)
        for _ in range(runs):
            tracemalloc.start()
            first_indices()
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        out.append({"total": total, "seconds": statistics.median(times), "peak": max(peaks)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/stagewise-bench")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--rows", type=int, default=None, help="total rows of the 8 stores")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        workdir, total, runs = Path(args.workdir) / "quick", args.rows or 16_384, args.runs or 2
    else:
        workdir, total, runs = Path(args.workdir), args.rows or 1_000_000, args.runs or 5
    workdir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    print(f"# data_mixing: {CORES} cores, workdir {workdir}, runs {runs}")

    data = build(workdir, total)
    measured, how, epoch, plan = throughput(data, runs)
    found, per_run = measured["median"], measured["runs"]
    mix = found[MIXTURE]
    rows = []
    for name, value in found.items():
        ratio = mix / value
        ratios = [a / b for a, b in zip(per_run[MIXTURE], per_run[name], strict=True)]
        goal = GOALS.get(name, "")
        verdict = ("met" if ratio >= 0.8 else "MISSED") if goal else ""
        rows.append(
            [
                name,
                rate(value),
                f"{value / BATCH / 1e3:.2f}k",
                f"{ratio:.2f}x",
                f"{min(ratios):.2f}-{max(ratios):.2f}x" if name != MIXTURE else "",
                goal,
                verdict,
            ]
        )
    stores = [data["single"], *data["sources"].values()]
    shards = sum(len(s.metadata.shards) for s in stores)
    in_files = all(c.storage == "array" for s in stores for c in s.metadata.columns)
    print()
    print(
        table(
            f"D7 weighted mixing: {SOURCES} stores, weights {WEIGHTS[0]:g}..{WEIGHTS[-1]:g}, "
            f"epoch {epoch:,} rows x {DIM} float32, batch {BATCH}; one whole epoch per run, "
            f"median of {runs}",
            [
                "path",
                "rows/s",
                "batches/s",
                "ratio: mixture / it",
                "ratio, single runs",
                "goal",
                "verdict",
            ],
            rows,
        )
    )
    layout = "one contiguous mapped file per split" if in_files else f"{shards} Arrow shard(s)"
    print(f"# gather: {how}; stores' column x: {layout}; counts {[e.count for e in plan.entries]}")
    print(
        "# the goal as written compares with sequential batches copied into new arrays; the "
        "like-for-like reference is the single store read in shuffled batches"
    )

    found_scale = scale([10**6, 10**8, 10**9], 1000, max(runs, 5))
    base = found_scale[0]
    scale_rows = [
        [
            f"{r['total']:.0e}",
            f"{r['seconds'] * 1e3:.2f} ms",
            f"{r['seconds'] / base['seconds']:.2f}x",
            f"{r['peak'] / 1024:.1f} KiB",
            f"{r['peak'] / base['peak']:.2f}x",
        ]
        for r in found_scale
    ]
    print()
    print(
        table(
            "Mixture order at scale: MixturePlan (8 entries) + MixtureSampler(rank 999 of 1000) "
            f"+ indices(0, {BATCH}); median time / max tracemalloc peak of {max(runs, 5)}",
            ["epoch samples", "time", "vs 1e6", "peak memory", "vs 1e6"],
            scale_rows,
        )
    )
    print(f"\n# total {time.perf_counter() - began:.0f} s")
    if args.json:
        figures = {"mixing": found, "mixing_runs": per_run, "scale": found_scale}
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
