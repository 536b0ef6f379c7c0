# ruff: noqa: T201
"""Issue 5: the trainer's input pipeline is never the bottleneck.

Data: the training quickstart's four scikit-learn datasets (digits, wine, iris,
breast_cancer; ``examples/quickstart/training/make_datasets.py`` writes them), every record
repeated ``--tile`` times (default 32: 64,576 training samples an epoch) so that an epoch
takes long enough to time. From those records, in the same process, one shuffled epoch of
every training sample, batch ``--batch-size`` (32, the quickstart's), through:

1. the trainer's own batch path, what ``stagewise train`` runs: ``read_store`` of the
   quickstart's stores into tables (as ``prepare`` writes them), ``plan_for`` and a
   ``MixtureSampler``, and ``stagewise.train.data.batches`` (one :class:`Batch` per step,
   one group per dataset at that dataset's own width);
2. ``stagewise.data.torch.MixtureLoader`` over sample stores. A mixture needs one shape per
   column, and the four datasets have 64, 13, 4 and 30 features, so its stores hold the
   features zero-padded to 64 float32 (fixed width: mapped arrays). Also, as a diagnostic,
   over the quickstart's own stores, whose ``features`` are a variable-length list column
   in Arrow shards (each batch's ``features`` is then a list of per-sample lists);
3. the peer: a torch ``DataLoader`` over a plain in-memory Python list of per-sample
   tensors (features padded to 64 float32, label, dataset number), ``shuffle=True``, the
   default collate;
4. the demo mlp (the quickstart's options: hidden 128, 2 layers, dropout 0.1) training
   on the trainer's batches as the recipe does: forward, masked cross-entropy, backward,
   gradient clipping, AdamW, in samples/s.

Both DataLoaders run with ``num_workers=0`` (the trainer's loop builds each batch in
line, in its own process), and the whole process runs with ``torch.set_num_threads(1)``.
Rounds interleave the paths; figures are medians over rounds.

    .venv/bin/python benchmarks/train_input.py           # about a minute
    .venv/bin/python benchmarks/train_input.py --quick   # smoke run, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from _report import rate, table, verdict

from stagewise.config.training import TrainConfig
from stagewise.data.order import MixturePlan, MixtureSampler
from stagewise.data.samples import StoreWriter, open_store
from stagewise.data.torch import MixtureDataset, MixtureLoader
from stagewise.models import build_model
from stagewise.pipeline.tasks.data import prepare_store
from stagewise.train.data import Split, batches, dataset_specs, plan_for, read_store
from stagewise.train.evaluation import losses_of

CORES = os.cpu_count() or 1
ROOT = Path(__file__).resolve().parents[1]
MAKE_DATASETS = ROOT / "examples" / "quickstart" / "training" / "make_datasets.py"
DATASETS = {"digits": 10, "wine": 3, "iris": 3, "breast_cancer": 2}  # name: num_classes
WIDTH = 64  # the widest dataset's features (digits): the padded stores' width
OPTIONS = {"hidden": 128, "layers": 2, "dropout": 0.1}  # the quickstart's mlp
DATA_VERSION = 1  # bumped when build() writes something different


# data -------------------------------------------------------------------------------------
def build(workdir: Path, tile: int) -> Path:
    """The quickstart's JSONL tiled ``tile`` times, its stores as ``prepare`` writes them
    (``stores/<name>``), and the padded fixed-width stores (``padded/<name>``); kept."""
    folder = workdir / f"train-x{tile}"
    done = folder / "done.json"
    if done.exists() and json.loads(done.read_text()) == {"version": DATA_VERSION}:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "raw").mkdir(parents=True)
    spec = importlib.util.spec_from_file_location("make_datasets", MAKE_DATASETS)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {MAKE_DATASETS}")
    make_datasets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_datasets)
    with contextlib.redirect_stdout(io.StringIO()):  # one line per dataset
        make_datasets.main(folder / "raw")
    for name in DATASETS:
        tiled = folder / "tiled" / name / "records.jsonl"
        tiled.parent.mkdir(parents=True)
        records = []
        for split in ("train", "test"):
            lines = (folder / "raw" / name / f"{split}.jsonl").read_text().splitlines()
            records += [json.loads(line) for line in lines]
        with tiled.open("w") as out:
            for copy in range(tile):
                for record in records:
                    out.write(json.dumps({**record, "id": copy * 100_000 + record["id"]}) + "\n")
        with contextlib.redirect_stdout(io.StringIO()):  # prepare's one-line log
            prepare_store(
                {"rows": str(tiled.parent)}, str(folder / "stores" / name), split_column="split"
            )
        write_padded(folder / "stores" / name, folder / "padded" / name)
    done.write_text(json.dumps({"version": DATA_VERSION}))
    return folder


def padded_features(values: Any) -> np.ndarray:
    rows = np.asarray(values, dtype=np.float32)
    out = np.zeros((len(rows), WIDTH), np.float32)
    out[:, : rows.shape[1]] = rows
    return out


def write_padded(source: Path, target: Path) -> None:
    """``source``'s splits with ``features`` as a fixed-size list of WIDTH float32."""
    store = open_store(source)
    with StoreWriter(target, f"padded-{source.name}-{len(store)}") as writer:
        for split in store.splits:
            part = store.split(split)
            columns = part.take(np.arange(len(part)))
            features = padded_features(columns["features"])
            batch = pa.record_batch(
                [
                    pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), WIDTH),
                    pa.array(np.asarray(columns["label"], np.int64)),
                ],
                names=["features", "label"],
            )
            writer.add_batch(batch, split)
        writer.commit()


def train_config(folder: Path, **training: Any) -> TrainConfig:
    """The quickstart's config (train.yaml) on the stores, without the release."""
    stores = [str(folder / "stores" / name) for name in DATASETS]
    ratios = training.pop("eval_ratios", {})
    return TrainConfig.model_validate(
        {
            "model": {"num_labels": max(DATASETS.values()), "name": "mlp", "options": OPTIONS},
            "datasets": {
                "dataset_configs": {
                    name: {"num_classes": classes, "eval_ratio": ratios.get(name, 1.0)}
                    for name, classes in DATASETS.items()
                },
            },
            "data": {"train_stores": stores, "val_stores": stores},
            "training": {"lr": 2e-3, "batch_size": 32, "seed": 0, **training},
        }
    )


def trainer_tables(folder: Path, config: TrainConfig, split: str) -> Split:
    """What ``load_data`` reads from ``data.train_stores`` (or ``val_stores``)."""
    out = Split({})
    for name in DATASETS:
        tables = read_store(
            str(folder / "stores" / name), config, split=split, task="classification"
        )
        out.tables.update(tables)
    return out


# paths ------------------------------------------------------------------------------------
TRAINER = "trainer: train.data.batches over tables (stagewise train's path)"
LOADER = "MixtureLoader over stores (features padded to 64 float32)"
LOADER_LISTS = "MixtureLoader over the quickstart's stores (features as list column)"
PEER = "peer: DataLoader over an in-memory list of tensors (shuffle, default collate)"
GOAL_ROWS = {TRAINER: ">= 0.8x", LOADER: ">= 0.8x"}
MODEL = "demo mlp step: forward + masked CE + backward + clip + AdamW"


def input_paths(folder: Path, batch: int) -> tuple[dict[str, Callable[[int], int]], Split]:
    """Each path as ``run(epoch) -> samples delivered``, one whole shuffled epoch."""
    config = train_config(folder, batch_size=batch)
    names = list(DATASETS)
    split = trainer_tables(folder, config, "train")
    plan = plan_for(split, names, shuffle=True)

    def trainer(epoch: int) -> int:
        sampler = MixtureSampler(plan, 0, epoch)
        return sum(b.size for b in batches(sampler, split, names, batch))

    def mixture(kind: str) -> Callable[[int], int]:
        sources = {n: open_store(folder / kind / n).split("train") for n in names}
        sizes = {n: len(s) for n, s in sources.items()}
        mix = MixturePlan.from_counts(sizes, counts=sizes, shuffle=True)
        loader = MixtureLoader(MixtureDataset(mix, sources, batch_size=batch, seed=0))

        def run(epoch: int) -> int:
            loader.set_epoch(epoch)
            return sum(len(b["index"]) for b in loader)

        return run

    samples = []
    for number, name in enumerate(names):
        t = split.tables[name]
        for row, label in zip(padded_features(t.inputs["features"]), t.targets, strict=True):
            samples.append((torch.tensor(row), torch.tensor(label), torch.tensor(number)))
    generator = torch.Generator().manual_seed(0)
    peer_loader = torch.utils.data.DataLoader(
        samples, batch_size=batch, shuffle=True, generator=generator, num_workers=0
    )

    def peer(epoch: int) -> int:
        return sum(len(b[0]) for b in peer_loader)

    paths = {TRAINER: trainer, LOADER: mixture("padded"), LOADER_LISTS: mixture("stores")}
    paths[PEER] = peer
    check_batches(paths, folder, plan, split, batch)
    return paths, split


def check_batches(
    paths: dict[str, Callable[[int], int]],
    folder: Path,
    plan: MixturePlan,
    split: Split,
    batch: int,
) -> None:
    """What the paths hand over before anything is timed (the warm-up checks that every
    path delivers the whole epoch)."""
    first = next(batches(MixtureSampler(plan, 0, 0), split, list(DATASETS), batch))
    if first.size != batch or len(first.groups) < 2:
        raise RuntimeError(f"trainer batch: {first.size} samples, {len(first.groups)} groups")
    sources = {n: open_store(folder / "padded" / n).split("train") for n in DATASETS}
    loaded = next(iter(MixtureLoader(MixtureDataset(plan, sources, batch_size=batch, seed=0))))
    if tuple(loaded["features"].shape) != (batch, WIDTH):
        raise RuntimeError(f"MixtureLoader batch: features {tuple(loaded['features'].shape)}")


def model_step(split: Split, batch: int, steps: int) -> tuple[Callable[[], int], int]:
    """The recipe's step on ``steps`` batches built beforehand: ``run() -> samples``."""
    config = train_config(Path("."), batch_size=batch)
    names = list(DATASETS)
    specs = dataset_specs(names, [split], config)
    model = build_model("mlp", datasets=specs, num_labels=10, options=OPTIONS)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    classes = torch.tensor([s.num_classes for s in specs])
    sampler = MixtureSampler(plan_for(split, names, shuffle=True), 0, 0)
    prepared = []
    for b in batches(sampler, split, names, batch, drop_last=True):
        prepared.append(b)
        if len(prepared) == steps:
            break

    def run() -> int:
        for b in prepared:
            per_sample, _ = losses_of(model(b), b, "classification", classes)
            loss = per_sample.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        return sum(b.size for b in prepared)

    return run, len(prepared)


# measuring --------------------------------------------------------------------------------
def measure(methods: dict[str, Callable[[int], int]], runs: int) -> dict[str, list[float]]:
    """Samples/s of each method per round; rounds rotate the order."""
    found: dict[str, list[float]] = {name: [] for name in methods}
    warm = {name: method(0) for name, method in methods.items()}  # caches, maps, allocations
    epochs = {name: n for name, n in warm.items() if name != MODEL}
    if len(set(epochs.values())) != 1:
        raise RuntimeError(f"the paths deliver different epochs: {epochs}")
    for run in range(runs):
        order = list(methods.items())
        order = order[run % len(order) :] + order[: run % len(order)]
        for name, method in order:
            began = time.perf_counter()
            samples = method(run + 1)
            found[name].append(samples / (time.perf_counter() - began))
    return found


def spread(a: list[float], b: list[float]) -> str:
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return f"{min(ratios):.2f}-{max(ratios):.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/stagewise-bench")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--tile", type=int, default=None, help="copies of every record")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=None, help="model steps timed a round")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        workdir, tile, runs = Path(args.workdir) / "quick", args.tile or 1, args.runs or 2
        steps = args.steps or 10
    else:
        workdir, tile, runs = Path(args.workdir), args.tile or 32, args.runs or 5
        steps = args.steps or 500
    torch.set_num_threads(1)
    workdir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    batch = args.batch_size
    print(
        f"# train_input: {CORES} cores, torch {torch.__version__} with "
        f"set_num_threads({torch.get_num_threads()}), workdir {workdir}, runs {runs}"
    )
    folder = build(workdir, tile)
    paths, split = input_paths(folder, batch)
    step, stepped = model_step(split, batch, steps)
    methods: dict[str, Callable[[int], int]] = {**paths, MODEL: lambda _epoch: step()}
    found = measure(methods, runs)
    median = {name: statistics.median(v) for name, v in found.items()}
    peer, model = median[PEER], median[MODEL]

    rows = []
    for name in paths:
        goal = GOAL_ROWS.get(name, "diagnostic" if name != PEER else "")
        ratio = median[name] / peer
        rows.append(
            [
                name,
                rate(median[name]),
                f"{median[name] / batch / 1e3:.2f}k",
                f"{ratio:.2f}x",
                spread(found[name], found[PEER]) if name != PEER else "",
                goal,
                verdict(ratio >= 0.8) if name in GOAL_ROWS else "",
            ]
        )
    sizes = {name: len(t) for name, t in split.tables.items()}
    print()
    print(
        table(
            f"Input paths: one shuffled epoch of {split.total:,} samples ({sizes}; the "
            f"quickstart's records x{tile}), batch {batch}, num_workers 0; median of {runs}",
            [
                "path",
                "samples/s",
                "batches/s",
                "ratio: it / peer",
                "ratio, single runs",
                "goal",
                "verdict",
            ],
            rows,
        )
    )

    rows = []
    for name in paths:
        if name == PEER:
            continue
        ratio = median[name] / model
        share = (1 / median[name]) / (1 / median[name] + 1 / model)
        rows.append(
            [
                name,
                rate(median[name]),
                f"{ratio:.2f}x",
                spread(found[name], found[MODEL]),
                "> 1x" if name in GOAL_ROWS else "diagnostic",
                verdict(ratio > 1) if name in GOAL_ROWS else "",
                f"{share:.0%}",
            ]
        )
    print()
    print(
        table(
            f"Input vs the model step: {MODEL}, {rate(model)} "
            f"({stepped} steps of {batch} a round, 1 thread); median of {runs}",
            [
                "path",
                "samples/s",
                "ratio: input / model step",
                "ratio, single runs",
                "goal",
                "verdict",
                "input's share of a serial step",
            ],
            rows,
        )
    )
    print(
        "# the input's share is (1/input)/(1/input + 1/model): the part of each step spent "
        "building its batch when, as in the trainer's loop, the batch is built in line"
    )
    print(f"\n# total {time.perf_counter() - began:.0f} s")
    if args.json:
        figures = {"median": median, "runs": found, "samples": split.total, "batch": batch}
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
