"""Mixture order: a pure function of (seed, epoch, plan), sharded, resumable, on demand."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from datetime import datetime
from itertools import chain

import numpy as np
import pytest

from stagewise.data.mixture import Source, allocate
from stagewise.data.order import (
    MixtureEntry,
    MixturePlan,
    MixtureSampler,
    Permutation,
    loading_statistics,
)
from stagewise.errors import DataError
from stagewise.release.plan import DatasetPlan, StagePlan

TINY = MixturePlan.from_counts({"a": 5, "b": 3}, {"a": 7, "b": 4})


def epoch(plan: MixturePlan, seed: int = 0, number: int = 0, **kw: int) -> list[tuple[int, int]]:
    return list(MixtureSampler(plan, seed, number, **kw))


def dataset_plan(name: str, samples: int | None, **kw: object) -> DatasetPlan:
    fields: dict[str, object] = {
        "location": f"{name}.jsonl",
        "enabled": True,
        "category": None,
        "duplicate": 1.0,
        "cap": None,
        "weight": None,
        "share": None,
        "expected": samples,
        "note": None,
    }
    fields.update(kw)
    return DatasetPlan(name=name, samples=samples, **fields)  # type: ignore[arg-type]


# -- Permutation -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 100, 1000, 4097])
def test_a_permutation_is_a_bijection(n: int) -> None:
    for key in (0, 1, 2**64 - 1, 0xDEADBEEF):
        values = Permutation(n, key)(np.arange(n))
        assert values.dtype == np.int64
        assert np.array_equal(np.sort(values), np.arange(n))


def test_a_permutation_depends_on_its_key_only() -> None:
    positions = np.arange(1000)
    first = Permutation(1000, 7)(positions)
    assert np.array_equal(first, Permutation(1000, 7)(positions))
    assert not np.array_equal(first, Permutation(1000, 8)(positions))
    assert not np.array_equal(first, positions)
    # computed on demand: any subset, in any shape, gives the same values
    assert np.array_equal(Permutation(1000, 7)(positions[::-7]), first[::-7])
    assert Permutation(1000, 7)(np.array([[3, 4]])).tolist() == [first[3:5].tolist()]


def test_a_permutation_refuses_positions_outside_its_range() -> None:
    with pytest.raises(IndexError):
        Permutation(10, 1)(np.array([10]))
    with pytest.raises(IndexError):
        Permutation(10, 1)(np.array([-1]))
    with pytest.raises(IndexError):
        Permutation(0, 1)(np.array([0]))
    assert Permutation(0, 1)(np.array([], dtype=np.int64)).size == 0
    assert Permutation(1, 1)(np.array([0])).tolist() == [0]


# -- exact orders ------------------------------------------------------------------------


def test_the_order_of_a_tiny_mixture_is_pinned() -> None:
    # a: 5 samples, 7 in the epoch (one pass + 2 drawn); b: 3 samples, 4 in the epoch.
    # These literals pin the order across versions: change them only on purpose.
    assert epoch(TINY) == [
        (0, 3), (0, 2), (1, 1), (1, 0), (0, 4), (0, 1), (0, 0), (1, 2), (0, 3), (1, 2), (0, 1),
    ]  # fmt: skip
    assert TINY.fingerprint == "f2eac110d48822838613ddcf83c0f741c72e8fe05fd4a86d97249fb294a07b11"


def test_without_shuffle_the_epoch_is_the_layout() -> None:
    plan = MixturePlan.from_counts({"a": 4, "b": 3}, {"a": 10, "b": 2}, shuffle=False)
    # a: two passes in index order, then 2 of 4 samples spread evenly (seeded offset);
    # b: 2 of 3 samples, in index order.
    assert epoch(plan) == [
        (0, 0), (0, 1), (0, 2), (0, 3), (0, 0), (0, 1), (0, 2), (0, 3), (0, 1), (0, 3),
        (1, 0), (1, 1),
    ]  # fmt: skip
    assert epoch(plan, number=1)[-2:] == [(1, 1), (1, 2)]  # another epoch, another subset
    whole = MixturePlan.from_counts({"a": 2, "b": 3}, shuffle=False)
    assert epoch(whole, seed=5) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]


def test_the_docs_worked_example_is_exact() -> None:
    plan = MixturePlan.from_counts({"a": 4, "b": 3}, {"a": 10, "b": 2})
    assert epoch(plan) == [
        (1, 1), (0, 2), (1, 0), (0, 0), (0, 0), (0, 2), (0, 1), (0, 1), (0, 0), (0, 2),
        (0, 3), (0, 3),
    ]  # fmt: skip
    assert epoch(plan, rank=0, world_size=2) == [(1, 1), (1, 0), (0, 0), (0, 1), (0, 0), (0, 3)]
    assert epoch(plan, rank=1, world_size=2) == [(0, 2), (0, 0), (0, 2), (0, 1), (0, 2), (0, 3)]
    # both ranks consumed 2 samples: sample_in_epoch 4; three ranks resume from there
    state = {"seed": 0, "epoch": 0, "fingerprint": plan.fingerprint, "sample_in_epoch": 4}
    resumed = []
    for rank in range(3):
        sampler = MixtureSampler(plan, 0, rank=rank, world_size=3)
        sampler.load_state_dict(state)
        resumed.append(list(sampler))
    assert resumed == [[(0, 0), (0, 1), (0, 3)], [(0, 2), (0, 0), (0, 3)], [(0, 1), (0, 2)]]


SOURCES = {
    "weights": [Source("a", 40, weight=0.75), Source("b", 30, repeat=2, weight=0.25)],
    "repeat 2.5": [Source("a", 12, repeat=2.5), Source("b", 7)],
    "cap": [Source("a", 50, repeat=3, cap=70), Source("b", 9, repeat=2)],
    "cap and weights": [
        Source("a", 50, cap=20, weight=0.5),
        Source("b", 45, repeat=2.5, weight=0.3),
        Source("c", 11, weight=0.2),
    ],
    "eight sources": [Source(f"s{i}", 3 + 5 * i, repeat=1.5, weight=i + 1) for i in range(8)],
}


@pytest.mark.parametrize("case", SOURCES)
@pytest.mark.parametrize("shuffle", [True, False])
def test_an_epoch_holds_each_dataset_count_and_spreads_repeats(case: str, shuffle: bool) -> None:
    sources = SOURCES[case]
    counts = {a.name: int(a.count or 0) for a in allocate(sources)}
    plan = MixturePlan.from_counts(
        {s.name: int(s.size or 0) for s in sources}, counts, shuffle=shuffle
    )
    seen = Counter(epoch(plan, seed=3, number=2))
    per_dataset = Counter(d for d, _ in seen.elements())
    assert [per_dataset[i] for i in range(len(sources))] == list(counts.values())
    for i, s in enumerate(sources):
        size, count = int(s.size or 0), counts[s.name]
        times = Counter(seen[i, j] for j in range(size))
        # every sample floor(count/size) times, and (count mod size) of them once more
        assert sum(seen[i, j] for j in range(size)) == count
        assert max(times) <= math.ceil(count / size)
        assert times[count // size + 1] == count % size


def test_orders_change_with_the_epoch_and_the_seed() -> None:
    plan = MixturePlan.from_counts({"a": 100, "b": 50}, {"a": 120, "b": 60})
    first = epoch(plan, seed=1, number=0)
    assert first == epoch(plan, seed=1, number=0)
    assert first != epoch(plan, seed=1, number=1)
    assert first != epoch(plan, seed=2, number=0)
    assert sorted(first) != sorted(epoch(plan, seed=1, number=1))  # other partial draws


def test_the_order_is_the_same_in_a_fresh_process() -> None:
    code = (
        "from stagewise.data.order import MixturePlan, MixtureSampler\n"
        "plan = MixturePlan.from_counts({'a': 37, 'b': 11}, {'a': 50, 'b': 30})\n"
        "print(list(MixtureSampler(plan, 42, 3)))\n"
    )
    plan = MixturePlan.from_counts({"a": 37, "b": 11}, {"a": 50, "b": 30})
    for hash_seed in ("1", "2"):  # the order must not depend on hash()
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        )
        assert result.stdout.strip() == str(epoch(plan, seed=42, number=3))


def test_the_fingerprint_covers_what_changes_the_order() -> None:
    base = MixturePlan.from_counts({"a": 5, "b": 3}, {"a": 7, "b": 4}, weights={"a": 2})
    assert (
        base.fingerprint
        == MixturePlan.from_counts(
            {"a": 5, "b": 3}, {"a": 7, "b": 4}, weights={"a": 2.0}, stage="other"
        ).fingerprint
    )
    for other in (
        MixturePlan.from_counts({"a": 5, "b": 3}, {"a": 7, "b": 5}, weights={"a": 2}),
        MixturePlan.from_counts(
            {"a": 5, "b": 3}, {"a": 7, "b": 4}, weights={"a": 2}, shuffle=False
        ),
        MixturePlan.from_counts({"b": 3, "a": 5}, {"a": 7, "b": 4}, weights={"a": 2}),
    ):
        assert other.fingerprint != base.fingerprint


# -- sharding and workers ----------------------------------------------------------------

SHARDED = MixturePlan.from_counts({"a": 13, "b": 7, "c": 5}, {"a": 20, "b": 14, "c": 3})


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_ranks_split_the_epoch_position_by_position(world_size: int) -> None:
    whole = epoch(SHARDED, seed=9)
    ranks = [epoch(SHARDED, seed=9, rank=r, world_size=world_size) for r in range(world_size)]
    # rank r holds positions r, r + W, ...: interleaving the ranks gives the epoch back
    assert [ranks[k % world_size][k // world_size] for k in range(len(whole))] == whole
    assert Counter(chain(*ranks)) == Counter(whole)
    assert max(map(len, ranks)) - min(map(len, ranks)) <= 1
    samplers = [
        MixtureSampler(SHARDED, 9, rank=r, world_size=world_size) for r in range(world_size)
    ]
    assert [len(s) for s in samplers] == list(map(len, ranks))


def round_robin(
    sampler: MixtureSampler, batch_size: int, num_workers: int, drop_last: bool = False
) -> list[tuple[np.ndarray, np.ndarray]]:
    """How torch's DataLoader collects workers' batches: worker 0, 1, ..., 0, 1, ..."""
    workers = [
        sampler.batches(batch_size, worker=w, num_workers=num_workers, drop_last=drop_last)
        for w in range(num_workers)
    ]
    out, w = [], 0
    while True:
        batch = next(workers[w], None)
        if batch is None:
            return out
        out.append(batch)
        w = (w + 1) % num_workers


@pytest.mark.parametrize("num_workers", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [1, 4, 5, 64])
def test_workers_reproduce_the_rank_order(num_workers: int, batch_size: int) -> None:
    sampler = MixtureSampler(SHARDED, 9, rank=1, world_size=2)
    expected = list(MixtureSampler(SHARDED, 9, rank=1, world_size=2))
    batches = round_robin(sampler, batch_size, num_workers)
    assert all(len(d) == batch_size for d, _ in batches[:-1])
    got = [(d, s) for ds, ss in batches for d, s in zip(ds.tolist(), ss.tolist(), strict=True)]
    assert got == expected
    d, s = sampler.indices(0, len(sampler))
    assert list(zip(d.tolist(), s.tolist(), strict=True)) == expected


def test_drop_last_gives_every_rank_the_same_number_of_full_batches() -> None:
    # 37 samples on 2 ranks: 19 and 18; batches of 4 -> 4 full batches on both ranks
    plan = MixturePlan.from_counts({"a": 30, "b": 10}, {"a": 30, "b": 7})
    for rank in (0, 1):
        sampler = MixtureSampler(plan, 0, rank=rank, world_size=2)
        batches = round_robin(sampler, 4, 3, drop_last=True)
        assert [len(d) for d, _ in batches] == [4, 4, 4, 4]
        assert len(round_robin(sampler, 4, 1, drop_last=False)) == 5


def test_batches_start_at_the_position_and_leave_it_to_advance() -> None:
    sampler = MixtureSampler(SHARDED, 4)
    whole = sampler.indices(0, len(sampler))
    sampler.advance(10)
    first = next(sampler.batches(8))
    assert sampler.position == 10
    assert first[0].tolist() == whole[0][10:18].tolist()
    assert first[1].tolist() == whole[1][10:18].tolist()
    sampler.advance(10**6)
    assert sampler.position == len(sampler) and list(sampler.batches(8)) == []


def test_iteration_follows_the_position_when_it_is_moved() -> None:
    sampler = MixtureSampler(SHARDED, 4)
    whole = list(MixtureSampler(SHARDED, 4))
    iterator = iter(sampler)
    assert [next(iterator) for _ in range(3)] == whole[:3]
    sampler.advance(5)  # e.g. a loader reporting samples it consumed elsewhere
    assert next(iterator) == whole[8]
    assert list(iterator) == whole[9:] and sampler.position == len(whole)


def test_a_billion_sample_epoch_is_planned_on_demand() -> None:
    sizes = {f"d{i}": 10**8 + 12_345 * i for i in range(8)}
    plan = MixturePlan.from_counts(sizes, {name: 125_000_000 for name in sizes})
    assert plan.total == 10**9
    sampler = MixtureSampler(plan, 1234, 7, rank=999, world_size=1000)
    assert len(sampler) == 10**6
    datasets, samples = sampler.indices(0, 256)
    assert datasets.shape == samples.shape == (256,)
    assert datasets.min() >= 0 and datasets.max() < 8
    assert (samples >= 0).all() and (samples < np.array(list(sizes.values()))[datasets]).all()
    tail = sampler.indices(len(sampler) - 3, len(sampler) + 10)
    assert tail[0].shape == (3,)


# -- resumption --------------------------------------------------------------------------


def test_a_resumed_sampler_continues_where_the_state_was_saved() -> None:
    uninterrupted = epoch(SHARDED, seed=5, number=2, rank=1, world_size=3)
    sampler = MixtureSampler(SHARDED, 5, 2, rank=1, world_size=3)
    before = [pair for _, pair in zip(range(4), sampler, strict=False)]
    state = json.loads(json.dumps(sampler.state_dict()))  # survives a checkpoint file
    assert state == {
        "seed": 5,
        "epoch": 2,
        "fingerprint": SHARDED.fingerprint,
        "sample_in_epoch": 12,
        "world_size": 3,
    }
    resumed = MixtureSampler(SHARDED, 5, 0, rank=1, world_size=3)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # a loop's usual set_epoch keeps the resume point
    assert resumed.epoch == 2
    assert before + list(resumed) == uninterrupted
    resumed.set_epoch(3)
    assert resumed.position == 0 and list(resumed) == epoch(
        SHARDED, seed=5, number=3, rank=1, world_size=3
    )


@pytest.mark.parametrize(("before", "after"), [(2, 3), (3, 2), (4, 1), (1, 4)])
def test_a_resume_with_another_world_size_sees_the_rest_of_the_epoch(
    before: int, after: int
) -> None:
    whole = epoch(SHARDED, seed=8, number=1)
    consumed, states = [], []
    for rank in range(before):
        sampler = MixtureSampler(SHARDED, 8, 1, rank=rank, world_size=before)
        consumed += [pair for _, pair in zip(range(5), sampler, strict=False)]
        states.append(sampler.state_dict())
    assert all(s == states[0] for s in states)
    assert states[0]["sample_in_epoch"] == 5 * before
    rest = []
    for rank in range(after):
        sampler = MixtureSampler(SHARDED, 8, 0, rank=rank, world_size=after)
        sampler.load_state_dict(states[0])
        rest.append(list(sampler))
    assert Counter(consumed) + Counter(chain(*rest)) == Counter(whole)
    # exactly: the new ranks split the positions that had not been seen
    tail = whole[5 * before :]
    assert [rest[k % after][k // after] for k in range(len(tail))] == tail


def test_a_saved_state_at_the_end_of_an_epoch_resumes_to_nothing() -> None:
    sampler = MixtureSampler(SHARDED, 1, rank=0, world_size=2)
    list(sampler)
    state = sampler.state_dict()
    assert state["sample_in_epoch"] == SHARDED.total
    other = MixtureSampler(SHARDED, 1, rank=1, world_size=2)
    other.load_state_dict(state)
    assert len(other) == 0 and list(other) == []


def test_a_state_from_another_mixture_or_seed_is_refused() -> None:
    state = MixtureSampler(TINY, 0).state_dict()
    other = MixturePlan.from_counts({"a": 5, "b": 3}, {"a": 7, "b": 5})
    with pytest.raises(DataError, match="different mixture") as caught:
        MixtureSampler(other, 0).load_state_dict(state)
    assert caught.value.hint and "afresh" in caught.value.hint
    with pytest.raises(DataError, match="seed 0"):
        MixtureSampler(TINY, 1).load_state_dict(state)
    with pytest.raises(DataError, match="sample_in_epoch"):
        MixtureSampler(TINY, 0).load_state_dict({"seed": 0, "epoch": 0})
    with pytest.raises(DataError, match="out of range"):
        MixtureSampler(TINY, 0).load_state_dict({**state, "sample_in_epoch": 12})


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="rank"):
        MixtureSampler(TINY, 0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        MixtureSampler(TINY, 0).batches(0)
    with pytest.raises(ValueError, match="worker"):
        MixtureSampler(TINY, 0).batches(2, worker=2, num_workers=2)
    with pytest.raises(DataError, match="not valid") as caught:
        MixturePlan((MixtureEntry("a", 0, 3), MixtureEntry("a", 2, -1)))
    assert len(caught.value.problems) == 3


# -- plans -------------------------------------------------------------------------------


def test_a_plan_from_sizes_and_weights_allocates_the_counts() -> None:
    plan = MixturePlan.from_counts({"a": 1000, "b": 100}, weights={"a": 3, "b": 1})
    assert [(e.name, e.count, e.weight) for e in plan.entries] == [
        ("a", 300, 3.0),
        ("b", 100, 1.0),
    ]
    assert MixturePlan.from_counts({"a": 4, "b": 2}).total == 6
    with pytest.raises(DataError, match="without a size: c"):
        MixturePlan.from_counts({"a": 4}, {"c": 1})
    with pytest.raises(DataError, match="weights are 0"):
        MixturePlan.from_counts({"a": 4}, weights={"a": 0})


def seed_stage_plan(samples: int | None = 5000) -> StagePlan:
    return StagePlan(
        [
            dataset_plan(
                "toll_station_scenarios_refined",
                samples,
                duplicate=5.0,
                weight=0.6,
                share=0.6,
                expected=25000 if samples else None,
            ),
            dataset_plan(
                "intersection_complex_cases",
                10000,
                duplicate=3.0,
                weight=0.3,
                share=0.3,
                expected=12500,
            ),
            dataset_plan("merge_lane", 10000, weight=0.1, share=0.1, expected=4167),
            dataset_plan("old", 10, enabled=False, expected=0),
        ],
        "stage_weight",
    )


def test_a_plan_from_a_stage_plan_takes_its_expected_counts() -> None:
    plan = MixturePlan.from_stage_plan(seed_stage_plan(), stage="finetuning")
    assert [(e.name, e.size, e.count, e.weight) for e in plan.entries] == [
        ("toll_station_scenarios_refined", 5000, 25000, 0.6),
        ("intersection_complex_cases", 10000, 12500, 0.3),
        ("merge_lane", 10000, 4167, 0.1),
    ]
    assert plan.total == 41667 and plan.stage == "finetuning"


def test_store_sizes_override_the_counted_samples_and_recount() -> None:
    plan = MixturePlan.from_stage_plan(
        seed_stage_plan(samples=None), sizes={"toll_station_scenarios_refined": 2000}
    )
    # toll station now supplies 10,000 at weight 0.6: the epoch shrinks to 16,667
    assert [e.count for e in plan.entries] == [10000, 5000, 1667]
    with pytest.raises(DataError, match="toll_station_scenarios_refined") as caught:
        MixturePlan.from_stage_plan(seed_stage_plan(samples=None))
    assert caught.value.hint and "sizes=" in caught.value.hint


def test_loading_statistics_have_the_seed_shape() -> None:
    plan = MixturePlan.from_stage_plan(seed_stage_plan(), stage="finetuning")
    event = loading_statistics(
        plan,
        {"toll_station_scenarios_refined": 2.3, "intersection_complex_cases": 1.04},
        now=datetime(2025, 9, 23, 14, 30),
        total_load_time=3.8,
    )
    assert event["timestamp"] == "2025-09-23 14:30:00"
    assert event["stage"] == "finetuning"
    assert event["datasets_loaded"][0] == {
        "name": "toll_station_scenarios_refined",
        "clips_loaded": 25000,
        "weight": 0.6,
        "load_time": "2.3s",
    }
    assert [d["load_time"] for d in event["datasets_loaded"]] == ["2.3s", "1.0s", "0.0s"]
    assert event["total_clips"] == 41667 and event["total_load_time"] == "3.8s"
    assert list(event) == [
        "timestamp",
        "stage",
        "datasets_loaded",
        "total_clips",
        "total_load_time",
    ]
    summed = loading_statistics(plan, {"merge_lane": 0.3, "x": 1.0}, stage="other")
    assert summed["total_load_time"] == "1.3s" and summed["stage"] == "other"
