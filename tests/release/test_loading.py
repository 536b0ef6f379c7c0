"""Loading a stage's data: stores and files opened, the mixture planned from their real
sizes, and seed 000's data-loading statistics recorded."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from stagewise.data.samples import StoreWriter
from stagewise.errors import DataError
from stagewise.release import open_release
from stagewise.release.events import read_events
from stagewise.release.loading import load_stage_data


def _store(path, rows: int, splits=("train",)):
    with StoreWriter(path, "k") as writer:
        for split in splits:
            writer.add_batch(pa.table({"id": np.arange(rows, dtype=np.int64)}), split)
        writer.commit()


@pytest.fixture
def mixed_repo(tmp_path):
    _store(tmp_path / "a", 100, ("train", "val"))
    _store(tmp_path / "b", 30)
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(10)))
    (tmp_path / "stage_config.yaml").write_text(
        "stages:\n  s:\n    config_file: s.json\nstage_order: [s]\ndefault_stage: s\n"
    )
    datasets = [
        {"name": "a", "path": "a", "stage_weight": 0.5},
        {"name": "b", "path": "b", "stage_weight": 0.3, "duplicate": 2},
        {"name": "c", "path": "c.jsonl", "stage_weight": 0.2, "duplicate": 4},
    ]
    (tmp_path / "s.json").write_text(json.dumps({"dataset_index": datasets}))
    return tmp_path


def test_a_stage_loads_as_a_mixture_over_its_real_sizes(mixed_repo):
    release = open_release(str(mixed_repo))
    data = load_stage_data(release)
    # Supplies 100, 60, 40 at shares .5/.3/.2: c limits the epoch to 40 / 0.2 = 200.
    assert [(e.name, e.size, e.count) for e in data.plan.entries] == [
        ("a", 100, 100),
        ("b", 30, 60),
        ("c", 10, 40),
    ]
    stats = data.statistics
    assert stats["stage"] == "s" and stats["total_clips"] == 200
    assert [d["clips_loaded"] for d in stats["datasets_loaded"]] == [100, 60, 40]
    assert stats["datasets_loaded"][0]["load_time"].endswith("s")
    batch_ids, _ = data.sampler(seed=1).indices(0, 200)
    assert np.bincount(batch_ids).tolist() == [100, 60, 40]
    assert data.sources["c"].take(np.array([3]))["id"].tolist() == [3]
    # The event is in the log, and the switch-event reader passes over it silently.
    lines = (mixed_repo / "stage_events.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["event"] == "data_loading"
    assert read_events(release).skipped == []


def test_the_split_is_chosen_and_must_exist(mixed_repo):
    release = open_release(str(mixed_repo))
    with pytest.raises(DataError, match=r"dataset 'b': the sample store has no split 'val'"):
        load_stage_data(release, "s", split="val", record=False)


def test_a_missing_dataset_is_named(mixed_repo):
    (mixed_repo / "c.jsonl").unlink()
    with pytest.raises(DataError, match="dataset 'c'"):
        load_stage_data(open_release(str(mixed_repo)), record=False)


def test_a_store_at_a_url_is_a_dataset_too(mixed_repo):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.put(str(mixed_repo / "b"), "/remote/b", recursive=True)
    datasets = [{"name": "b", "path": "memory://remote/b", "stage_weight": 1.0}]
    (mixed_repo / "s.json").write_text(json.dumps({"dataset_index": datasets}))
    data = load_stage_data(open_release(str(mixed_repo)), record=False)
    assert [(e.name, e.size) for e in data.plan.entries] == [("b", 30)]
    assert data.sources["b"].take([0, 29])["id"].tolist() == [0, 29]
    fs.rm("/remote", recursive=True)
