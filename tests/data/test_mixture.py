"""Mixture counts: supply (size x repeat, capped), and weight-driven epochs."""

from __future__ import annotations

import pytest

from stagewise.data.mixture import Source, allocate, apportion


def counts(sources: list[Source]) -> dict[str, int | None]:
    return {a.name: a.count for a in allocate(sources)}


def test_without_weights_every_source_gives_its_supply() -> None:
    assert counts(
        [Source("a", 10, repeat=3), Source("b", 7), Source("c", 100, repeat=2, cap=150)]
    ) == {"a": 30, "b": 7, "c": 150}


def test_the_seed_loading_statistics_follow_from_the_weights() -> None:
    # Seed 000: toll_station 25,000 clips at weight 0.6 gives a 41,667-clip epoch.
    result = counts(
        [
            Source("toll_station_scenarios_refined", 5000, repeat=5, weight=0.6),
            Source("intersection_complex_cases", 10000, repeat=3, weight=0.3),
            Source("merge_lane", 10000, repeat=1, weight=0.1),
        ]
    )
    assert result == {
        "toll_station_scenarios_refined": 25000,
        "intersection_complex_cases": 12500,
        "merge_lane": 4167,
    }
    assert sum(result.values()) == 41667  # type: ignore[arg-type]


def test_the_scarcest_source_relative_to_its_weight_sets_the_epoch() -> None:
    result = counts([Source("big", 1000, weight=1), Source("small", 10, repeat=2, weight=1)])
    assert result == {"big": 20, "small": 20}


def test_unknown_sizes_leave_counts_unknown_but_shares_known() -> None:
    allocations = allocate([Source("a", None, weight=3), Source("b", 10, weight=1)])
    assert [a.count for a in allocations] == [None, None]
    assert [a.share for a in allocations] == [0.75, 0.25]


def test_all_zero_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="all weights are 0"):
        allocate([Source("a", 1, weight=0), Source("b", 1, weight=0)])


def test_apportion_breaks_ties_by_priority_then_order_and_respects_limits() -> None:
    assert apportion(10, [1 / 3] * 3, [10, 10, 10], [0, 0, 0]) == [4, 3, 3]
    assert apportion(10, [1 / 3] * 3, [10, 10, 10], [0, 0, 5]) == [3, 3, 4]
    assert apportion(10, [0.5, 0.5], [3, 100], [0, 0]) == [3, 7]


def test_an_empty_source_is_left_out_and_the_others_share_its_weight() -> None:
    allocations = allocate(
        [Source("empty", 0, weight=0.5), Source("a", 30, weight=0.25), Source("b", 30, weight=0.25)]
    )
    assert [(a.count, a.share) for a in allocations] == [(0, 0.0), (30, 0.5), (30, 0.5)]
