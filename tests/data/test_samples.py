"""The sample store: layout, indexing, zero-copy views, atomic publication, bad stores."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from stagewise.data.samples import StoreWriter, open_store, verify_store, writer
from stagewise.errors import StoreError


def _batch(start: int, rows: int) -> pa.RecordBatch:
    ids = np.arange(start, start + rows, dtype=np.int64)
    vectors = np.repeat(ids.astype(np.float32), 3) * np.tile([1, 10, 100], rows).astype(np.float32)
    return pa.record_batch(
        {
            "id": ids,
            "name": [f"s{i}" for i in ids],
            "vec": pa.FixedSizeListArray.from_arrays(pa.array(vectors), 3),
        }
    )


@pytest.fixture
def table_store(tmp_path, monkeypatch):
    # Small shards, so that indexing crosses shard borders.
    monkeypatch.setattr(writer, "SHARD_BYTES", 1)
    with StoreWriter(tmp_path / "s", "k1") as w:
        w.add_batch(_batch(0, 5), "train")
        w.add_batch(_batch(100, 3), "val")
        w.add_batch(_batch(5, 5), "train")
        w.commit()
    return tmp_path / "s"


def test_rows_keep_split_order_across_shards(table_store):
    store = open_store(table_store)
    assert len(store) == 13
    assert store.splits == {"train": 10, "val": 3}
    assert len(store.metadata.shards) == 3
    assert [store[i]["id"] for i in range(13)] == [*range(10), 100, 101, 102]
    assert store[-1]["name"] == "s102"
    assert store[7]["vec"].tolist() == [7.0, 70.0, 700.0]
    val = store.split("val")
    assert len(val) == 3 and val[0]["id"] == 100 and val[-1]["id"] == 102


def test_take_gathers_in_the_order_asked_across_shards(table_store):
    store = open_store(table_store)
    batch = store.take(np.array([11, 0, 6, 6, 4]))
    assert batch["id"].tolist() == [101, 0, 6, 6, 4]
    assert batch["name"] == ["s101", "s0", "s6", "s6", "s4"]
    assert batch["vec"].shape == (5, 3) and batch["vec"][0].tolist() == [101, 1010, 10100]
    assert store[2:5]["id"].tolist() == [2, 3, 4]
    assert store.split("train")[[9, 0]]["id"].tolist() == [9, 0]
    assert [b["id"].tolist() for b in store.split("train").iter_batches(4)] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9],
    ]


def test_numeric_columns_are_views_of_the_mapped_shard(tmp_path):
    with StoreWriter(tmp_path / "s", "k") as w:
        w.add_batch(_batch(0, 1000))
        w.commit()
    store = open_store(tmp_path / "s")
    ids = store.column("id")
    assert not ids.flags.owndata and not ids.flags.writeable  # a view of the memory map
    assert store[3]["vec"].base is not None
    assert ids[999] == 999


def test_indexing_errors(table_store):
    store = open_store(table_store)
    with pytest.raises(IndexError):
        store[13]
    with pytest.raises(IndexError):
        store.take([0, 99])
    with pytest.raises(StoreError, match="no split 'test'"):
        store.split("test")
    with pytest.raises(StoreError, match="no column 'nope'"):
        store.column("nope")


def test_open_reads_metadata_only(table_store):
    store_dir = next(table_store.glob("v-*"))
    for shard in (store_dir / "shards").iterdir():
        shard.unlink()
    store = open_store(table_store)  # still opens: nothing but metadata.json was read
    assert len(store) == 13
    with pytest.raises(StoreError, match="cannot be read"):
        store[0]


def test_verify_finds_a_changed_shard(table_store):
    store = open_store(table_store)
    assert verify_store(store) == []
    shard = next((next(table_store.glob("v-*")) / "shards").iterdir())
    data = bytearray(shard.read_bytes())
    data[-20] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems = verify_store(open_store(table_store))
    assert len(problems) == 1 and "checksum" in problems[0].message
    assert problems[0].file.startswith("shards/")


def test_a_failed_write_publishes_nothing_and_keeps_the_old_version(table_store):
    before = (table_store / "LATEST").read_text()
    with pytest.raises(RuntimeError), StoreWriter(table_store, "k2") as w:
        w.add_batch(_batch(0, 3))
        raise RuntimeError("crash mid-write")
    assert (table_store / "LATEST").read_text() == before
    assert not list(table_store.glob("v-k2*")) and not list(table_store.glob(".tmp-*"))
    assert len(open_store(table_store)) == 13


def test_a_new_version_moves_latest_and_the_old_stays_readable(table_store):
    with StoreWriter(table_store, "k2") as w:
        w.add_batch(_batch(0, 2))
        w.commit()
    assert len(open_store(table_store)) == 2
    assert len(open_store(table_store, version="k1")) == 13


def test_bad_stores_give_located_errors(table_store, tmp_path):
    version = next(table_store.glob("v-*"))
    metadata = version / "metadata.json"
    text = metadata.read_text()

    metadata.write_text(text[: len(text) // 2])
    with pytest.raises(StoreError, match="not valid JSON") as info:
        open_store(table_store)
    assert "metadata.json" in str(info.value)

    newer = json.loads(text)
    newer["format_version"] = 99
    metadata.write_text(json.dumps(newer))
    with pytest.raises(StoreError, match="format version 99"):
        open_store(table_store)

    broken = json.loads(text)
    broken["splits"]["train"]["count"] = "many"
    metadata.write_text(json.dumps(broken))
    with pytest.raises(StoreError, match=r"splits\.train\.count"):
        open_store(table_store)

    metadata.write_text(text)
    (table_store / "LATEST").write_text("v-gone\n")
    with pytest.raises(StoreError, match="not a complete version"):
        open_store(table_store)

    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="not a sample store"):
        open_store(tmp_path / "empty")


def test_a_corrupt_shard_is_named_when_read(table_store):
    shard = next(table_store.glob("v-*")) / "shards" / "00000.arrow"  # holds sample 0
    shard.write_bytes(b"not arrow at all")
    with pytest.raises(StoreError, match=r"shard shards/\d+\.arrow cannot be read"):
        open_store(table_store)[0]


def test_a_store_at_a_url_opens_and_reads_through_the_cache(table_store, tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.put(str(table_store), "/bucket/s", recursive=True)
    store = open_store("memory://bucket/s")
    assert len(store) == 13 and store.split("val")[1]["id"] == 101
    assert store.take([0, 12])["id"].tolist() == [0, 102]
    assert verify_store(store) == []
    cached = list((tmp_path / ".stagewise-home" / "cache" / "stores").iterdir())
    assert cached and all(len(p.name) == 64 for p in cached), "fetched once, named by checksum"
    fs.rm("/bucket", recursive=True)


def test_leftovers_of_dead_writers_are_swept_and_live_ones_kept(tmp_path):
    import os
    import time

    root = tmp_path / "s"
    host = writer._HOST
    dead = root / f".tmp-abc-999999999-deadbeef@{host}"  # no such process here
    live = root / f".tmp-abc-{os.getpid()}-cafecafe@{host}"
    elsewhere = root / ".tmp-abc-999999999-cafecafe@another-machine"  # cannot be checked
    for folder in (dead, live, elsewhere):
        folder.mkdir(parents=True)
        old = time.time() - 120
        os.utime(folder, (old, old))
    writer.sweep_temporaries(root)
    assert not dead.exists() and live.exists() and elsewhere.exists()


def test_numeric_columns_are_contiguous_per_split_and_text_stays_in_shards(table_store):
    store = open_store(table_store)
    assert {c.name: c.storage for c in store.metadata.columns} == {
        "id": "array",
        "name": "shard",
        "vec": "array",
    }
    version = next(table_store.glob("v-*"))
    assert len(list((version / "columns").glob("*.bin"))) == 4  # (id, vec) x (train, val)
    train = store.split("train")
    ids = train.column("id")
    assert ids.tolist() == list(range(10)) and not ids.flags.owndata
    assert [b["id"].tolist() for b in train.iter_batches(6)] == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9]]
    assert np.shares_memory(next(iter(train.iter_batches(6)))["vec"], train.column("vec"))


def test_missing_values_in_numeric_columns(tmp_path):
    floats = pa.record_batch({"f": pa.array([1.5, None], pa.float32())})
    with StoreWriter(tmp_path / "f", "k") as w:
        w.add_batch(floats)
        w.commit()
    assert np.isnan(open_store(tmp_path / "f")[1]["f"])
    ints = pa.record_batch({"i": pa.array([1, None], pa.int64())})
    with (
        pytest.raises(StoreError, match="column 'i' has missing values"),
        StoreWriter(tmp_path / "i", "k") as w,
    ):
        w.add_batch(ints)
    assert not (tmp_path / "i" / "LATEST").exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("file", "../../outside.pth"),
        ("file", "/etc/passwd"),
        ("file", "arrays/../../x"),
        ("sha256", "not-a-digest"),
    ],
)
def test_file_names_from_metadata_cannot_leave_the_version(table_store, field, value):
    metadata = next(table_store.glob("v-*")) / "metadata.json"
    data = json.loads(metadata.read_text())
    data["shards"][0][field] = value
    metadata.write_text(json.dumps(data))
    with pytest.raises(StoreError, match=r"metadata\.json is malformed at 'shards\.0"):
        open_store(table_store)


def test_a_crafted_key_is_refused(table_store):
    metadata = next(table_store.glob("v-*")) / "metadata.json"
    data = json.loads(metadata.read_text())
    data["key"] = "../../escape"
    metadata.write_text(json.dumps(data))
    with pytest.raises(StoreError, match="malformed at 'key'"):
        open_store(table_store)
