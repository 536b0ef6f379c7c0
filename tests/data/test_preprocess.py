"""Preprocess once: records -> store, the cache, new versions, custom transforms."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stagewise.config.preprocess import PreprocessConfig, TimeSeriesSettings
from stagewise.data.preprocess import preprocess
from stagewise.data.samples import list_versions, open_store, verify_store
from stagewise.data.synth import synth_traffic
from stagewise.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("traffic")
    synth_traffic(folder, nodes=23, steps=288, missing=0.05, seed=3)
    return folder


def _config(traffic, output, **series) -> PreprocessConfig:
    settings = {"meta": str(traffic / "nodes.csv"), "patch_size": 4, **series}
    return PreprocessConfig(
        source=str(traffic / "records.parquet"),
        output=str(output),
        timeseries=TimeSeriesSettings(**settings),
        batch_size=997,
    )


def test_traffic_becomes_windows_over_one_stored_series(traffic, tmp_path):
    result = preprocess(_config(traffic, tmp_path / "store"))
    store = result.store
    assert (
        not result.cached
        and result.records == pq.read_metadata(traffic / "records.parquet").num_rows
    )
    stats = store.metadata.stats
    assert (stats["steps"], stats["nodes"], stats["freq_seconds"]) == (288, 23, 300)
    assert stats["missing_cells"] == 288 * 23 - result.records
    # 288 steps: train 173, val 57, test 58 -> windows of 24 steps.
    assert store.splits == {"train": 150, "val": 34, "test": 35}
    series = store.array("series")
    assert series.shape == (288, 23, 1)
    sample = store.split("val")[0]
    assert sample["start"] == 173
    assert np.shares_memory(sample["x"], series)  # a view, not a copy
    np.testing.assert_array_equal(sample["x"], series[173:185])
    np.testing.assert_array_equal(sample["y"], series[185:197])
    assert sample["te_x"].shape == (12, 2)
    batch = store.split("train").take([0, 5])
    assert batch["x"].shape == (2, 12, 23, 1) and batch["te_y"].shape == (2, 12, 2)
    # The raw records agree with the series cell by cell.
    records = pq.read_table(traffic / "records.parquet").slice(0, 50).to_pylist()
    node_ids = store.array("node_ids").tolist()
    for record in records:
        step = int((record["timestamp"].timestamp() - 1758240000) // 300)
        assert series[step, node_ids.index(record["node"]), 0] == pytest.approx(record["value"])
    # Patches: 23 nodes, leaves of at most 4 -> 8 leaves of 3, padded to 3.
    assert stats["patches"] == {"enabled": True, "patches": 8, "patch_size": 3}
    assert sorted(store.array("patch_nodes").tolist()) == list(range(23))
    # Store size stays close to the numeric payload (the series), not 24x it.
    assert store.metadata.arrays["series"].bytes < 1.2 * 288 * 23 * 4 + 1024
    assert verify_store(store) == []


def test_same_source_and_settings_is_a_cache_hit(traffic, tmp_path):
    first = preprocess(_config(traffic, tmp_path / "store"))
    again = preprocess(_config(traffic, tmp_path / "store", patch_size=4))
    assert again.cached and again.store.key == first.store.key
    forced = preprocess(_config(traffic, tmp_path / "store"), force=True)
    assert not forced.cached and forced.store.key == first.store.key
    # Published beside the old version (never in its place), and LATEST moved to it.
    assert forced.store.folder != first.store.folder
    assert open_store(first.store.folder).key == first.store.key
    assert preprocess(_config(traffic, tmp_path / "store")).store.folder == forced.store.folder
    changed = preprocess(_config(traffic, tmp_path / "store", input_len=6, output_len=6))
    assert not changed.cached and changed.store.key != first.store.key
    assert len(list_versions(str(tmp_path / "store"))) == 3
    assert open_store(tmp_path / "store", version=first.store.key).splits["train"] == 150


def test_batch_size_does_not_change_the_key(traffic, tmp_path):
    first = preprocess(_config(traffic, tmp_path / "store"))
    other = _config(traffic, tmp_path / "store")
    other.batch_size = 50_000
    assert preprocess(other).cached
    assert first.store.key == open_store(tmp_path / "store").key


def test_unordered_records_give_the_same_series(traffic, tmp_path):
    table = pq.read_table(traffic / "records.parquet")
    shuffled = table.take(np.random.default_rng(0).permutation(table.num_rows))
    pq.write_table(shuffled, tmp_path / "shuffled.parquet")
    ordered = preprocess(_config(traffic, tmp_path / "a")).store
    config = _config(traffic, tmp_path / "b")
    config.source = str(tmp_path / "shuffled.parquet")
    np.testing.assert_array_equal(preprocess(config).store.array("series"), ordered.array("series"))


def test_date_range_and_explicit_freq(traffic, tmp_path):
    config = _config(
        traffic,
        tmp_path / "s",
        start_date="2025-09-19 06:00",
        end_date="2025-09-19 17:55",
        freq="5min",
        input_len=3,
        output_len=3,
    )
    store = preprocess(config).store
    assert store.metadata.stats["steps"] == 144
    assert store.metadata.stats["start"] == "2025-09-19 06:00:00"
    assert store.metadata.stats["outside_date_range"] > 0


def test_bad_settings_and_data(traffic, tmp_path):
    with pytest.raises(ValueError, match=r"must be 1, found 0.9"):
        TimeSeriesSettings(train_ratio=0.5)
    with pytest.raises(DataError, match="fewer than one window"):
        preprocess(_config(traffic, tmp_path / "s", input_len=100, output_len=100))
    with pytest.raises(ConfigError, match="after end_date"):
        preprocess(_config(traffic, tmp_path / "s", start_date="20250920", end_date="20250919"))
    meta = pa.table({"node": [1, 2], "lat": [1.0, None], "lng": [1.0, 2.0]})
    pq.write_table(meta, tmp_path / "bad_nodes.parquet")
    with pytest.raises(DataError, match=r"1 node\(s\) have no coordinates.*\[2\]"):
        preprocess(_config(traffic, tmp_path / "s", meta=str(tmp_path / "bad_nodes.parquet")))
    with pytest.raises(DataError, match="no column 'flow'"):
        preprocess(_config(traffic, tmp_path / "s", value_columns=["flow"]))
    assert not (tmp_path / "s" / "LATEST").exists()  # nothing was published


def test_a_failed_preprocess_keeps_the_previous_version(traffic, tmp_path):
    good = preprocess(_config(traffic, tmp_path / "s")).store
    table = pq.read_table(traffic / "records.parquet")
    pq.write_table(pa.concat_tables([table, table.slice(0, 1)]), tmp_path / "dup.parquet")
    config = _config(traffic, tmp_path / "s")
    config.source = str(tmp_path / "dup.parquet")
    with pytest.raises(DataError, match="duplicate timestamp"):
        preprocess(config)
    assert open_store(tmp_path / "s").key == good.key
    assert not list((tmp_path / "s").glob(".tmp-*"))


def test_rows_with_a_custom_transform_and_split_column(tmp_path, monkeypatch):
    (tmp_path / "my_prep.py").write_text(
        "import pyarrow as pa, pyarrow.compute as pc\n"
        "def double(batch):\n"
        "    return batch.set_column(1, 'x', pc.multiply(batch.column('x'), 2))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = pa.table({"split": ["train", "val", "train", "test"], "x": [1, 2, 3, 4]})
    pq.write_table(rows, tmp_path / "rows.parquet")
    config = PreprocessConfig(
        source=str(tmp_path / "rows.parquet"),
        output=str(tmp_path / "s"),
        transform="my_prep:double",
        split_column="split",
    )
    store = preprocess(config).store
    assert store.splits == {"train": 2, "val": 1, "test": 1}
    assert store.split("train").column("x").tolist() == [2, 6]
    (tmp_path / "my_prep.py").write_text(
        "def double(batch):\n    return batch  # changed code, new version\n"
    )
    import importlib
    import sys

    importlib.reload(sys.modules["my_prep"])
    assert not preprocess(config).cached
    config.transform = "my_prep:nothing"
    with pytest.raises(ConfigError, match="has no function 'nothing'"):
        preprocess(config)


def test_a_killed_preprocess_leaves_the_previous_version_readable(tmp_path):
    import subprocess
    import sys

    rows = pa.table({"x": np.arange(10_000, dtype=np.int64)})
    pq.write_table(rows, tmp_path / "rows.parquet", row_group_size=1000)
    (tmp_path / "killer.py").write_text(
        "import os, signal\n"
        "seen = 0\n"
        "def die_on_third(batch):\n"
        "    global seen\n"
        "    seen += 1\n"
        "    if seen == 3:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return batch\n"
    )
    good = PreprocessConfig(
        source=str(tmp_path / "rows.parquet"), output=str(tmp_path / "s"), transform="none"
    )
    before = preprocess(good).store.key
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from stagewise.config.preprocess import PreprocessConfig\n"
        "from stagewise.data.preprocess import preprocess\n"
        "preprocess(PreprocessConfig(source=sys.argv[2], output=sys.argv[3],"
        " transform='killer:die_on_third', batch_size=1000))\n"
    )
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(tmp_path),
            str(tmp_path / "rows.parquet"),
            str(tmp_path / "s"),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -9
    assert list((tmp_path / "s").glob(".tmp-*")), "the half-written version is left aside"
    store = open_store(tmp_path / "s")
    assert store.key == before and store.column("x").tolist() == list(range(10_000))


def test_string_node_ids_and_records_whose_id_type_differs(tmp_path):
    records = pa.table(
        {
            "node": ["a", "b", "a", "b"] * 10,
            "timestamp": pa.array(
                [1758240000 + 300 * (i // 2) for i in range(40)], pa.timestamp("s")
            ),
            "value": pa.array(range(40), pa.float32()),
        }
    )
    pq.write_table(records, tmp_path / "r.parquet")
    (tmp_path / "nodes.csv").write_text("node,lat,lng\na,1.0,2.0\nb,1.5,2.5\n")
    config = PreprocessConfig(
        source=str(tmp_path / "r.parquet"),
        output=str(tmp_path / "s"),
        timeseries=TimeSeriesSettings(meta=str(tmp_path / "nodes.csv"), input_len=2, output_len=1),
    )
    store = preprocess(config).store
    assert store.array("node_ids").tolist() == ["a", "b"]
    assert store.array("series")[:2, :, 0].tolist() == [[0.0, 1.0], [2.0, 3.0]]
    (tmp_path / "ints.csv").write_text("node,lat,lng\n1,1.0,2.0\n2,1.5,2.5\n")
    config.timeseries.meta = str(tmp_path / "ints.csv")
    with pytest.raises(DataError, match="node ids of the records"):
        preprocess(config)


def test_normalization_uses_observed_readings_only(tmp_path):
    records = pa.table(
        {
            "node": [1] * 10,
            "timestamp": pa.array([1758240000 + 600 * i for i in range(10)], pa.timestamp("s")),
            "value": pa.array([10.0] * 10, pa.float32()),
        }
    )
    pq.write_table(records, tmp_path / "r.parquet")
    config = PreprocessConfig(
        source=str(tmp_path / "r.parquet"),
        output=str(tmp_path / "s"),
        timeseries=TimeSeriesSettings(freq="5min", input_len=2, output_len=1),
    )
    store = preprocess(config).store  # every other step is missing, filled with 0
    assert store.metadata.stats["normalization"] == {"mean": [10.0], "std": [0.0]}
    assert store.metadata.stats["missing_cells"] == 9
