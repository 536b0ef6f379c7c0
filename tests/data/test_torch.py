"""PyTorch views: a map-style dataset over a store split, an iterable dataset over a
mixture, batches as tensors; the same order for any number of DataLoader workers, across
two gloo processes, and after a resume on another number of workers or ranks: no sample
lost or duplicated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from collections import Counter
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

from stagewise.data.order import MixturePlan, MixtureSampler
from stagewise.data.samples import SampleStore, StoreWriter, open_store, writer
from stagewise.data.torch import MixtureDataset, MixtureLoader, StoreDataset, store_loader
from stagewise.errors import DataError

SEED = 11
BATCH = 4
BASES = {"a": 1000, "b": 2000, "c": 3000}  # a sample's id is its store's base + its index
SIZES = {"a": 5, "b": 3, "c": 4}
# counts above the sizes: a = 2 passes + 2 drawn, b = 1 pass + 1, c = 2 passes + 1
COUNTS = {"a": 12, "b": 4, "c": 9}
TOTAL = 25  # batches of 4: six full, one of 1; on 2 ranks 13 + 12 samples
PLAN = MixturePlan.from_counts(SIZES, COUNTS)
NAMES = list(SIZES)

Pair = tuple[int, int]  # (dataset number in the plan, sample index in its store)


def scale(dim: int) -> np.ndarray:
    return (10.0 ** np.arange(dim)).astype(np.float32)


def rows(ids: range, dim: int = 3, without: tuple[str, ...] = ()) -> pa.RecordBatch:
    """int64 ``id``, float64 scalar ``score`` = id / 2, float32 ``vec`` = id * 10^[0..dim)
    (less the columns ``without``)."""
    values = np.array(ids, dtype=np.int64)
    vec = (values[:, None].astype(np.float32) * scale(dim)).reshape(-1)
    columns = {
        "id": values,
        "score": values / 2,
        "vec": pa.FixedSizeListArray.from_arrays(pa.array(vec), dim),
    }
    return pa.record_batch({k: v for k, v in columns.items() if k not in without})


def make_store(root: Path, base: int, size: int, **options: Any) -> Path:
    """A table store of ids ``base .. base + size - 1``, written in two batches (two
    shards under ``small_shards``, so that gathers cross a shard border)."""
    with StoreWriter(root, "k") as w:
        w.add_batch(rows(range(base, base + size // 2), **options))
        w.add_batch(rows(range(base + size // 2, base + size), **options))
        w.commit()
    return root


@pytest.fixture
def small_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "SHARD_BYTES", 1)  # one shard per written batch


@pytest.fixture
def store_paths(tmp_path: Path, small_shards: None) -> dict[str, Path]:
    return {n: make_store(tmp_path / n, BASES[n], SIZES[n]) for n in NAMES}


@pytest.fixture
def stores(store_paths: dict[str, Path]) -> dict[str, SampleStore]:
    return {name: open_store(path) for name, path in store_paths.items()}


@pytest.fixture
def split_store(tmp_path: Path, small_shards: None) -> SampleStore:
    """Ten ``train`` samples (ids 0-9) in two shards, then four ``val`` ones (100-103)."""
    root = tmp_path / "split"
    with StoreWriter(root, "k") as w:
        w.add_batch(rows(range(0, 5)), "train")
        w.add_batch(rows(range(5, 10)), "train")
        w.add_batch(rows(range(100, 104)), "val")
        w.commit()
    return open_store(root)


def epoch(start: int = 0) -> list[Pair]:
    """The uninterrupted single-rank epoch, as order.py defines it."""
    return list(MixtureSampler(PLAN, SEED))[start:]


def pairs(batches: list[dict[str, Any]]) -> list[Pair]:
    return [
        (d, i)
        for b in batches
        for d, i in zip(b["dataset"].tolist(), b["index"].tolist(), strict=True)
    ]


def interleave(ranks: list[list[Pair]]) -> list[Pair]:
    """Rank r of W holds positions r, r + W, ...: the global order back from the ranks."""
    world = len(ranks)
    return [ranks[k % world][k // world] for k in range(sum(map(len, ranks)))]


def check_content(batch: dict[str, Any]) -> None:
    """Every row holds the sample its (dataset, index) names, whichever store it came from."""
    bases = torch.tensor([BASES[n] for n in NAMES])
    expected = bases[batch["dataset"]] + batch["index"]
    assert torch.equal(batch["id"], expected)
    assert torch.equal(batch["score"], expected.double() / 2)
    assert torch.equal(batch["vec"], expected.float()[:, None] * torch.from_numpy(scale(3)))


def mixture(stores: dict[str, SampleStore], **options: Any) -> MixtureDataset:
    return MixtureDataset(PLAN, stores, batch_size=BATCH, seed=SEED, **options)


def take(loader: MixtureLoader, count: int) -> list[dict[str, Any]]:
    """The first ``count`` batches; the iteration is then closed (its workers stop)."""
    iterator = iter(loader)
    try:
        return [next(iterator) for _ in range(count)]
    finally:
        iterator.close()  # type: ignore[attr-defined]


def assert_same_batches(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [len(b["index"]) for b in got] == [len(b["index"]) for b in expected]
    for number, (a, b) in enumerate(zip(got, expected, strict=True)):
        for column in ("dataset", "index", "id", "vec"):
            assert torch.equal(a[column], b[column]), f"batch {number}, column {column}"


# -- StoreDataset and store_loader --------------------------------------------------------


def test_store_dataset_gives_tensors_of_one_sample_or_a_batch(split_store: SampleStore) -> None:
    train = StoreDataset(split_store, "train")
    assert len(train) == 10 and len(StoreDataset(split_store)) == 14
    item = train[7]
    assert isinstance(item["id"], torch.Tensor) and item["id"].item() == 7
    assert item["vec"].dtype == torch.float32 and item["vec"].tolist() == [7.0, 70.0, 700.0]
    assert item["score"].item() == 3.5
    assert train[np.int64(2)]["id"].item() == 2
    batch = train[[9, 0, 4, 5]]  # across the shard border, in the order asked
    assert batch["id"].tolist() == [9, 0, 4, 5]
    assert batch["vec"].shape == (4, 3) and batch["vec"][0].tolist() == [9.0, 90.0, 900.0]
    # one sample and a batch agree on every column's dtype (a float64 scalar stays float64)
    for column in ("id", "score", "vec"):
        assert train[3][column].dtype == train[[3]][column].dtype, column
    assert batch["score"].dtype == torch.float64 and batch["id"].dtype == torch.int64
    val = StoreDataset(split_store, "val")
    assert len(val) == 4 and val[[0, 3]]["id"].tolist() == [100, 103]
    with pytest.raises(IndexError):
        train[10]


def test_store_loader_batches_in_order_or_in_a_seeded_permutation(
    split_store: SampleStore,
) -> None:
    def ids(**options: Any) -> list[list[int]]:
        return [
            b["id"].tolist() for b in store_loader(split_store, "train", batch_size=4, **options)
        ]

    assert ids() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert ids(drop_last=True) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    shuffled = ids(shuffle=True, seed=5)
    assert [len(b) for b in shuffled] == [4, 4, 2]
    assert sorted(chain(*shuffled)) == list(range(10))  # a permutation: none lost or repeated
    assert shuffled == ids(shuffle=True, seed=5)  # the seed fixes the order
    assert list(chain(*shuffled)) != list(range(10))
    assert shuffled != ids(shuffle=True, seed=6)
    # two workers fetch the batches in turn; the loader hands them out in the same order
    assert ids(shuffle=True, seed=5, num_workers=2) == shuffled
    batches = list(store_loader(split_store, "val", batch_size=3, num_workers=2))
    assert [b["id"].tolist() for b in batches] == [[100, 101, 102], [103]]
    assert batches[0]["vec"].shape == (3, 3) and batches[0]["score"].dtype == torch.float64


# -- MixtureDataset and MixtureLoader -------------------------------------------------------


def test_a_mixture_epoch_is_the_plan_exactly_for_any_number_of_workers(
    stores: dict[str, SampleStore],
) -> None:
    runs = {w: list(MixtureLoader(mixture(stores), num_workers=w)) for w in (0, 1, 2)}
    batches = runs[0]
    assert [len(b["index"]) for b in batches] == [4, 4, 4, 4, 4, 4, 1]
    assert len(MixtureLoader(mixture(stores))) == 7
    for batch in batches:
        assert batch["dataset"].dtype == batch["index"].dtype == torch.int64
        check_content(batch)
    seen = pairs(batches)
    assert seen == epoch()
    # the multiset is the plan's: each dataset gives its count; a sample occurs
    # floor(count / size) or ceil(count / size) times, exactly count % size of them the more
    counts = Counter(seen)
    for number, name in enumerate(NAMES):
        size, count = SIZES[name], COUNTS[name]
        times = [counts[(number, i)] for i in range(size)]
        assert sum(times) == count, name
        passes, drawn = divmod(count, size)
        assert sorted(times) == [passes] * (size - drawn) + [passes + 1] * drawn, name
    assert sum(counts.values()) == TOTAL
    # the same batches, in the same order, whatever the number of workers
    assert_same_batches(runs[1], batches)
    assert_same_batches(runs[2], batches)


@pytest.mark.parametrize(("before", "after"), [(0, 2), (2, 0)])
def test_a_loader_resumes_mid_epoch_without_replaying_it(
    stores: dict[str, SampleStore], before: int, after: int
) -> None:
    whole = list(MixtureLoader(mixture(stores)))
    first = MixtureLoader(mixture(stores), num_workers=before)
    head = take(first, 3)  # with workers the loader has prefetched further: not counted
    state = first.state_dict()
    assert state["sample_in_epoch"] == 12 and state["epoch"] == 0 and state["seed"] == SEED
    assert state["fingerprint"] == PLAN.fingerprint
    second = MixtureLoader(mixture(stores), num_workers=after)
    second.load_state_dict(state)
    assert len(second) == 4  # ceil(13 / 4)
    tail = list(second)
    assert_same_batches(head + tail, whole)
    assert pairs(tail) == epoch(12)
    assert second.state_dict()["sample_in_epoch"] == TOTAL


@pytest.mark.parametrize("new_world", [1, 3])
def test_a_resume_on_another_world_size_finishes_the_epoch_exactly(
    stores: dict[str, SampleStore], new_world: int
) -> None:
    loaders = [MixtureLoader(mixture(stores, rank=r, world_size=2)) for r in (0, 1)]
    heads = [pairs(take(loader, 2)) for loader in loaders]  # 2 batches of 4 on each rank
    states = [loader.state_dict() for loader in loaders]
    assert states[0] == states[1] and states[0]["sample_in_epoch"] == 16
    rest = []
    for rank in range(new_world):
        loader = MixtureLoader(mixture(stores, rank=rank, world_size=new_world))
        loader.load_state_dict(states[rank % 2])  # any rank's state will do
        rest.append(pairs(list(loader)))
    assert interleave(heads) == epoch()[:16]
    assert interleave(rest) == epoch(16)
    assert Counter(chain(*heads, *rest)) == Counter(epoch())


def test_drop_last_gives_every_rank_the_same_number_of_full_batches(
    stores: dict[str, SampleStore],
) -> None:
    # 25 samples on 2 ranks: 13 and 12; batches of 4: 3 full batches on both ranks
    loaders = [
        MixtureLoader(mixture(stores, rank=r, world_size=2, drop_last=True), num_workers=2)
        for r in (0, 1)
    ]
    ranks = [list(loader) for loader in loaders]
    assert [[len(b["index"]) for b in rank] for rank in ranks] == [[4, 4, 4], [4, 4, 4]]
    assert [len(loader) for loader in loaders] == [3, 3]
    assert interleave([pairs(rank) for rank in ranks]) == epoch()[:24]


# -- two processes under torch.distributed (gloo, CPU) -----------------------------------

RANK_SCRIPT = """
import json, sys
from datetime import timedelta

import torch.distributed as dist

from stagewise.data.order import MixturePlan
from stagewise.data.samples import open_store
from stagewise.data.torch import MixtureDataset, MixtureLoader

config = json.loads(open(sys.argv[1]).read())
rank = int(sys.argv[2])
dist.init_process_group(
    "gloo", init_method=config["rendezvous"], rank=rank, world_size=2,
    timeout=timedelta(seconds=30),
)
plan = MixturePlan.from_counts(config["sizes"], config["counts"])
sources = {name: open_store(path) for name, path in config["stores"].items()}
dataset = MixtureDataset(plan, sources, batch_size=config["batch_size"], seed=config["seed"])
loader = MixtureLoader(dataset, num_workers=2)
batches, state = [], None
for number, batch in enumerate(loader, 1):
    batches.append({c: batch[c].tolist() for c in ("dataset", "index", "id")})
    if number == config["save_after"]:
        state = loader.state_dict()
dist.barrier()
dist.destroy_process_group()
result = {"rank": dataset.rank, "world_size": dataset.world_size, "batches": batches,
          "state": state}
with open(config["out"].format(rank=rank), "w") as out:
    json.dump(result, out)
"""


def run_ranks(
    tmp_path: Path, config: dict[str, Any], timeout: float = 90.0
) -> list[dict[str, Any]]:
    """Run RANK_SCRIPT as ranks 0 and 1; their results, or a failure showing both logs."""
    script, config_file = tmp_path / "rank.py", tmp_path / "config.json"
    script.write_text(RANK_SCRIPT)
    config_file.write_text(json.dumps(config))
    env = dict(os.environ)
    if Path("/sys/class/net/lo").exists():  # both ranks are here: gloo needs no hostname lookup
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    logs = [tmp_path / f"rank{r}.log" for r in (0, 1)]
    procs = []
    for rank, log in enumerate(logs):
        with open(log, "w") as sink:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(script), str(config_file), str(rank)],
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()

    def report() -> str:
        return "\n".join(
            f"--- rank {r} (exit {p.returncode}):\n{logs[r].read_text()[-4000:]}"
            for r, p in enumerate(procs)
        )

    assert time.monotonic() < deadline, f"the ranks ran past {timeout} s\n{report()}"
    assert [p.returncode for p in procs] == [0, 0], report()
    return [json.loads(Path(config["out"].format(rank=r)).read_text()) for r in (0, 1)]


def test_two_gloo_ranks_with_two_workers_each_share_the_epoch_exactly(
    tmp_path: Path, store_paths: dict[str, Path]
) -> None:
    config = {
        "rendezvous": f"file://{tmp_path / 'rendezvous'}",
        "stores": {name: str(path) for name, path in store_paths.items()},
        "sizes": SIZES,
        "counts": COUNTS,
        "seed": SEED,
        "batch_size": BATCH,
        "save_after": 2,
        "out": str(tmp_path / "rank{rank}.json"),
    }
    results = run_ranks(tmp_path, config)
    # the rank and world size came from the process group
    assert [(r["rank"], r["world_size"]) for r in results] == [(0, 2), (1, 2)]
    ranks: list[list[Pair]] = []
    for result in results:
        seen, ids = [], []
        for b in result["batches"]:
            seen += list(zip(b["dataset"], b["index"], strict=True))
            ids += b["id"]
        assert ids == [BASES[NAMES[d]] + i for d, i in seen]  # each row is the sample named
        ranks.append(seen)
    # 13 samples on rank 0, 12 on rank 1, in batches of 4
    assert [[len(b["index"]) for b in r["batches"]] for r in results] == [[4, 4, 4, 1], [4, 4, 4]]
    whole = epoch()
    # disjoint by position: rank r holds exactly positions r, r + 2, ... of the epoch
    assert ranks[0] == whole[0::2] and ranks[1] == whole[1::2]
    # no sample lost or duplicated: together the ranks are the plan's epoch
    assert Counter(chain(*ranks)) == Counter(whole)
    assert Counter(NAMES[d] for d, _ in chain(*ranks)) == COUNTS
    # the state each rank saves after 2 batches: the global position, the same on both
    assert results[0]["state"] == results[1]["state"]
    assert results[0]["state"]["sample_in_epoch"] == 2 * BATCH * 2


# -- bad input ------------------------------------------------------------------------------


def test_a_planned_dataset_without_a_source_is_refused(stores: dict[str, SampleStore]) -> None:
    with pytest.raises(DataError, match=r"no source given for dataset\(s\) c of the plan"):
        MixtureDataset(PLAN, {"a": stores["a"], "b": stores["b"]}, batch_size=BATCH, seed=SEED)


def test_a_source_smaller_than_the_plan_is_refused(stores: dict[str, SampleStore]) -> None:
    # the plan says c holds 4 samples; b's store, given in its place, holds 3
    with pytest.raises(DataError, match=r"fewer samples than the plan says: c \(3 < 4\)"):
        MixtureDataset(PLAN, {**stores, "c": stores["b"]}, batch_size=BATCH, seed=SEED)


def test_a_state_of_another_seed_is_refused(stores: dict[str, SampleStore]) -> None:
    state = MixtureLoader(mixture(stores)).state_dict()
    other = MixtureLoader(MixtureDataset(PLAN, stores, batch_size=BATCH, seed=SEED + 1))
    with pytest.raises(DataError, match="seed"):
        other.load_state_dict(state)


def test_stores_whose_tensor_shapes_differ_are_refused_up_front(
    tmp_path: Path, stores: dict[str, SampleStore]
) -> None:
    # Unshuffled, a's 4 samples make the first batch and wide's the second: the two never
    # meet in one batch, and are refused all the same, before any batch is built.
    wide = open_store(make_store(tmp_path / "wide", 4000, 4, dim=4))
    plan = MixturePlan.from_counts({"a": 5, "wide": 4}, {"a": 4, "wide": 4}, shuffle=False)
    with pytest.raises(DataError, match=r"column 'vec' is float\[4\] in wide but float\[3\] in a"):
        MixtureDataset(plan, {"a": stores["a"], "wide": wide}, batch_size=4, seed=SEED)


def test_stores_whose_columns_differ_are_refused_up_front(
    tmp_path: Path, stores: dict[str, SampleStore]
) -> None:
    bare = open_store(make_store(tmp_path / "bare", 4000, 4, without=("score",)))
    plan = MixturePlan.from_counts({"a": 5, "bare": 4})
    with pytest.raises(DataError, match=r"column 'score' is in a but not in bare"):
        MixtureDataset(plan, {"a": stores["a"], "bare": bare}, batch_size=4, seed=SEED)


class Columns:
    """A sample source that is not a store (``len`` and ``take``): some of a store's columns."""

    def __init__(self, store: SampleStore, *names: str) -> None:
        self.store, self.names = store, names

    def __len__(self) -> int:
        return len(self.store)

    def take(self, indices: np.ndarray) -> dict[str, Any]:
        batch = self.store.take(indices)
        return {name: batch[name] for name in self.names}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_other_sources_are_checked_in_every_batch(
    tmp_path: Path, stores: dict[str, SampleStore], num_workers: int
) -> None:
    wide = open_store(make_store(tmp_path / "wide", 4000, 4, dim=4))
    plan = MixturePlan.from_counts({"a": 5, "other": 3}, {"a": 5, "other": 4})

    def epoch_of(other: Columns) -> list[dict[str, Any]]:
        sources = {"a": Columns(stores["a"], "id", "vec"), "other": other}
        # one batch of all 9 samples: the two sources meet in it
        dataset = MixtureDataset(plan, sources, batch_size=9, seed=SEED)
        return list(MixtureLoader(dataset, num_workers=num_workers))

    [batch] = epoch_of(Columns(stores["b"], "id", "vec"))  # b's 3 samples as "other": fine
    assert batch["dataset"].tolist().count(1) == 4
    assert torch.equal(batch["id"], torch.tensor([1000, 2000])[batch["dataset"]] + batch["index"])
    # the error raised in a DataLoader worker reaches the loop as a DataError
    message = data_error(lambda: epoch_of(Columns(wide, "id", "vec")))
    assert "column 'vec' has shape (4,) in other" in message
    message = data_error(lambda: epoch_of(Columns(wide, "id", "score", "vec")))
    assert "other gives the columns ['id', 'score', 'vec']" in message


def data_error(call: Any) -> str:
    """The message of the DataError that ``call()`` raises, its traceback's frames cleared.
    torch re-raises a worker's error from a frame that holds it, a reference cycle that
    keeps the DataLoader iterator alive until the garbage collector runs; its workers are
    then past a clean shutdown and are stopped after a 5 s timeout each."""
    try:
        call()
    except DataError as error:
        traceback.clear_frames(error.__traceback__)
        return str(error)
    raise AssertionError("no DataError was raised")


def test_set_epoch_starts_the_next_epoch_in_a_new_order(stores: dict[str, SampleStore]) -> None:
    plan = MixturePlan.from_counts({"a": 5, "b": 3}, {"a": 5, "b": 3})
    loader = MixtureLoader(MixtureDataset(plan, stores, batch_size=4, seed=SEED))
    first = [batch["index"].tolist() for batch in loader]
    loader.set_epoch(1)
    second = [batch["index"].tolist() for batch in loader]
    assert sorted(chain(*first)) == sorted(chain(*second)) and first != second
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["sample_in_epoch"] == 8


def test_windows_stores_with_different_node_counts_are_refused(tmp_path: Path) -> None:
    from stagewise.config.preprocess import PreprocessConfig
    from stagewise.data.preprocess import preprocess
    from stagewise.data.synth import synth_traffic

    stores_by_nodes = {}
    for nodes in (6, 7):
        synth_traffic(tmp_path / f"raw{nodes}", nodes=nodes, steps=200)
        config = PreprocessConfig(
            source=str(tmp_path / f"raw{nodes}" / "records.parquet"),
            output=str(tmp_path / f"s{nodes}"),
        )
        stores_by_nodes[f"n{nodes}"] = preprocess(config).store.split("train")
    plan = MixturePlan.from_counts({name: len(s) for name, s in stores_by_nodes.items()})
    with pytest.raises(DataError, match=r"column 'x' is float32\[12, 7, 1\] in n7"):
        MixtureDataset(plan, stores_by_nodes, batch_size=4, seed=SEED)


def test_set_epoch_after_load_state_dict_resumes(stores: dict[str, SampleStore]) -> None:
    plan = MixturePlan.from_counts({"a": 5, "b": 3}, {"a": 5, "b": 3})
    first = MixtureLoader(MixtureDataset(plan, stores, batch_size=2, seed=SEED))
    seen = []
    for batch in first:
        seen.append(batch["index"].tolist())
        if len(seen) == 2:
            break
    state = first.state_dict()
    resumed = MixtureLoader(MixtureDataset(plan, stores, batch_size=2, seed=SEED))
    resumed.load_state_dict(state)
    resumed.set_epoch(state["epoch"])  # the usual loop calls this before every epoch
    rest = [batch["index"].tolist() for batch in resumed]
    whole = [
        batch["index"].tolist()
        for batch in MixtureLoader(MixtureDataset(plan, stores, batch_size=2, seed=SEED))
    ]
    assert seen + rest == whole
