"""Seed 004's time-series samples: alignment, missing values, time features, splits,
windows and spatial patches, on tiny data with exact expected values."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from stagewise.data import spatial, timeseries
from stagewise.errors import DataError

T0 = timeseries.parse_date("20250919")  # a Friday
NODES = pa.array([10, 20, 30], pa.int64())


def _records(rows: list[tuple[int, int, float]]) -> pa.RecordBatch:
    nodes, steps, values = zip(*rows, strict=True) if rows else ((), (), ())
    return pa.record_batch(
        {
            "node": pa.array(nodes, pa.int64()),
            "timestamp": pa.array([T0 + s * 300 for s in steps], pa.timestamp("s")),
            "value": pa.array(values, pa.float32()),
        }
    )


def _builder(steps: int = 4, **options: object) -> timeseries.SeriesBuilder:
    return timeseries.SeriesBuilder(
        np.full((steps, 3, 1), -1.0, np.float32),
        NODES,
        start=T0,
        freq=300,
        node_column="node",
        time_column="timestamp",
        value_columns=["value"],
        **options,  # type: ignore[arg-type]
    )


def test_records_in_any_order_land_in_their_cells():
    builder = _builder()
    builder.add(_records([(30, 3, 3.5), (10, 0, 1.0), (20, 1, 2.0)]))
    builder.add(_records([(10, 1, 1.5), (30, 0, 3.0)]))
    missing = builder.finish("nan")
    series = builder.series[:, :, 0]
    assert missing == 7
    np.testing.assert_array_equal(
        series,
        [
            [1.0, np.nan, 3.0],
            [1.5, 2.0, np.nan],
            [np.nan, np.nan, np.nan],
            [np.nan, np.nan, 3.5],
        ],
    )


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("zero", [[1.0, 0.0, 3.0], [1.5, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 3.5]]),
        ("ffill", [[1.0, 0.0, 3.0], [1.5, 2.0, 3.0], [1.5, 2.0, 3.0], [1.5, 2.0, 3.5]]),
    ],
)
def test_missing_value_policies(policy, expected):
    builder = _builder()
    builder.add(_records([(30, 3, 3.5), (10, 0, 1.0), (20, 1, 2.0), (10, 1, 1.5), (30, 0, 3.0)]))
    builder.finish(policy)
    np.testing.assert_array_equal(builder.series[:, :, 0], expected)


def test_records_outside_the_range_are_counted_not_kept():
    builder = _builder(steps=2)
    builder.add(_records([(10, 0, 1.0), (10, 2, 9.0), (10, 5, 9.0)]))
    assert builder.outside == 2
    builder.finish("zero")
    assert builder.series[:, 0, 0].tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    ("batches", "match"),
    [
        ([[(10, 1, 1.0), (10, 1, 2.0)]], r"record 2: a second reading for node 10 .*duplicate"),
        ([[(10, 1, 1.0)], [(20, 0, 1.0), (10, 1, 2.0)]], r"record 3: a second reading"),
        ([[(99, 0, 1.0)]], r"node 99 has no entry \(no coordinates\)"),
    ],
)
def test_bad_records_name_the_record(batches, match):
    builder = _builder()
    with pytest.raises(DataError, match=match):
        for rows in batches:
            builder.add(_records(rows))


def test_off_grid_times_are_refused_and_skip_mode_counts_them():
    batch = pa.record_batch(
        {
            "node": pa.array([10, 10], pa.int64()),
            "timestamp": pa.array([T0, T0 + 150], pa.timestamp("s")),
            "value": pa.array([1.0, 2.0], pa.float32()),
        }
    )
    with pytest.raises(DataError, match=r"record 2: time 2025-09-19 00:02:30 is not on the 300s"):
        _builder().add(batch)
    lenient = _builder(on_error="skip")
    lenient.add(batch)
    lenient.add(_records([(10, 0, 5.0), (77, 1, 1.0)]))
    assert lenient.skipped == 3 and len(lenient.first_errors) == 3


def test_time_features_are_step_of_day_and_weekday():
    features = timeseries.time_features(T0 + 86_400 - 600, 4, 300)
    # Friday 23:50, 23:55, then Saturday 00:00, 00:05 (Monday = 0).
    assert features.tolist() == [[286, 4], [287, 4], [0, 5], [1, 5]]


def test_splits_match_patchstg_published_window_counts():
    parts = timeseries.chronological_splits(35_040, {"train": 0.6, "val": 0.2, "test": 0.2}, 12, 12)
    assert [(p.name, p.windows) for p in parts] == [
        ("train", 21_001),
        ("val", 6_985),
        ("test", 6_985),
    ]
    assert [(p.first_step, p.steps) for p in parts] == [
        (0, 21_024),
        (21_024, 7_008),
        (28_032, 7_008),
    ]
    starts = timeseries.window_starts(parts)
    assert starts[21_000] == 21_000 and starts[21_001] == 21_024  # no window crosses a border


def test_windows_longer_than_a_split_are_an_error():
    with pytest.raises(DataError, match=r"the val split has 20 steps, fewer than one window"):
        timeseries.chronological_splits(100, {"train": 0.6, "val": 0.2, "test": 0.2}, 12, 12)


def test_dates():
    assert timeseries.parse_date("2025-09-19") == T0
    assert timeseries.parse_date("20250919", end=True) == T0 + 86_399
    assert timeseries.parse_date("2025-09-19 08:00") == T0 + 8 * 3600
    with pytest.raises(DataError, match="cannot read the date"):
        timeseries.parse_date("20251399")


def test_kd_leaves_are_equal_sized_and_cover_every_node_once():
    coords = np.random.default_rng(1).random((37, 2))
    for depth in range(5):
        leaves = spatial.kd_leaves(coords, depth)
        sizes = [len(leaf) for leaf in leaves]
        assert len(leaves) == 2**depth and max(sizes) - min(sizes) <= 1
        assert sorted(np.concatenate(leaves).tolist()) == list(range(37))


def test_kd_split_alternates_latitude_then_longitude():
    coords = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    assert [leaf.tolist() for leaf in spatial.kd_leaves(coords, 2)] == [[0], [1], [2], [3]]


def test_patch_layout_pads_with_the_nearest_outside_nodes_and_round_trips():
    coords = np.array([[0.0, 0.0], [0.0, 0.1], [0.0, 0.2], [5.0, 5.0], [5.0, 5.1]])
    layout = spatial.patch_layout(coords, patch_size=3)
    # Leaves {0, 1} and {2, 3, 4}; the short leaf takes node 2, nearest to its centroid.
    assert layout["patch_order"].tolist() == [0, 1, 2, 2, 3, 4]
    values = np.arange(5) * 10
    restored = np.empty(5)
    restored[layout["patch_nodes"]] = values[layout["patch_order"]][layout["patch_slots"]]
    assert restored.tolist() == values.tolist()


def test_out_of_order_records_are_an_error_only_when_sorted_is_required():
    rows = [[(10, 0, 1.0), (10, 2, 2.0)], [(20, 1, 3.0)]]
    relaxed = _builder()
    for batch in rows:
        relaxed.add(_records(batch))
    strict = _builder(require_sorted=True)
    strict.add(_records(rows[0]))
    with pytest.raises(
        DataError, match=r"record 3: time 2025-09-19 00:05:00 comes after 2025-09-19 00:10:00"
    ):
        strict.add(_records(rows[1]))


def test_a_zero_ratio_never_makes_splits_overlap():
    parts = timeseries.chronological_splits(25, {"train": 0.7, "val": 0.0, "test": 0.3}, 1, 1)
    assert [(p.name, p.first_step, p.steps) for p in parts] == [
        ("train", 0, 18),
        ("val", 18, 0),
        ("test", 18, 7),
    ]


def test_the_step_is_found_when_later_batches_hold_earlier_times():
    newest_first = [
        pa.record_batch({"t": pa.array([T0 + 600, T0 + 600], pa.timestamp("s"))}),
        pa.record_batch({"t": pa.array([T0 + 300, T0], pa.timestamp("s"))}),
    ]
    scan = timeseries.scan_times(newest_first, "t")
    assert (scan.first, scan.last, scan.step) == (T0, T0 + 600, 300)


def test_null_readings_are_missing_values():
    builder = _builder(steps=2)
    batch = pa.record_batch(
        {
            "node": pa.array([10, 20], pa.int64()),
            "timestamp": pa.array([T0, T0], pa.timestamp("s")),
            "value": pa.array([None, 2.0], pa.float32()),
        }
    )
    builder.add(batch)
    assert builder.finish("zero") == 5  # the null reading and the 4 cells never read
    assert builder.series[0, :, 0].tolist() == [0.0, 2.0, 0.0]


@pytest.mark.parametrize(("scale", "unit"), [(1, "s"), (1000, "ms"), (1_000_000, "us")])
def test_integer_times_in_seconds_milliseconds_or_microseconds(scale, unit):
    seconds = timeseries.to_seconds(pa.array([T0 * scale, (T0 + 300) * scale]), "t")
    assert seconds.tolist() == [T0, T0 + 300], unit


def test_time_zone_aware_times_keep_their_wall_clock():
    moment = pa.array([T0 * 1000], pa.timestamp("ms", tz="UTC"))
    beijing = moment.cast(pa.timestamp("ms", tz="Asia/Shanghai"))
    assert timeseries.to_seconds(beijing, "t").tolist() == [T0 + 8 * 3600]
