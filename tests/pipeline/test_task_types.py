"""The built-in task types on small real data: data_processing (tables and annotations
into a sample store), training and evaluation (the linear classifier), deployment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from sklearn import datasets as sklearn_datasets

from stagewise.data.samples import open_store
from stagewise.errors import DataError, PipelineError
from stagewise.pipeline.tasks.data import prepare, prepare_store, read_table
from stagewise.pipeline.tasks.deploy import deploy
from stagewise.pipeline.tasks.linear import LinearModel, evaluate, train


def iris_columns() -> dict[str, Any]:
    data = sklearn_datasets.load_iris()
    columns: dict[str, Any] = {"id": np.arange(len(data.target))}
    for i, name in enumerate(["sepal_length", "sepal_width", "petal_length", "petal_width"]):
        columns[name] = data.data[:, i]
    return {**columns, "label": data.target}


def write_csv(path: Path, columns: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcsv.write_csv(pa.table(columns), path)
    return path


@pytest.fixture
def iris_store(tmp_path: Path) -> Path:
    write_csv(tmp_path / "iris" / "iris.csv", iris_columns())
    prepare_store({"raw": str(tmp_path / "iris")}, str(tmp_path / "store"))
    return tmp_path / "store"


# ------------------------------------------------------------------ data_processing


def test_prepare_joins_the_annotations_by_id_and_drops_unlabelled_rows(tmp_path: Path) -> None:
    columns = iris_columns()
    labels = columns.pop("label")
    write_csv(tmp_path / "raw" / "part-0.csv", {k: v[:100] for k, v in columns.items()})
    pq.write_table(
        pa.table({k: v[100:] for k, v in columns.items()}), tmp_path / "raw" / "b.parquet"
    )
    annotated = np.arange(0, 150, 2)  # every other row has a label
    write_csv(
        tmp_path / "ann" / "labels.csv", {"id": annotated[::-1], "label": labels[annotated[::-1]]}
    )
    result = prepare_store(
        {"raw_data": str(tmp_path / "raw"), "annotations": str(tmp_path / "ann")},
        str(tmp_path / "out"),
    )
    assert result == {"rows": 75, "read": {"raw_data": 150}, "unannotated": 75}
    store = open_store(tmp_path / "out")
    assert store.splits == {"train": 75}
    assert store.metadata.stats["unannotated"] == 75
    ids = store.column("id")
    assert list(ids) == list(annotated)  # the rows' order, not the annotations'
    assert list(store.column("label")) == list(labels[annotated])


def test_an_annotation_replaces_a_rows_own_label_and_rows_keep_theirs(tmp_path: Path) -> None:
    write_csv(
        tmp_path / "raw.csv", {"id": [1, 2, 3], "x": [0.5, 1.5, 2.5], "label": ["a", "b", None]}
    )
    write_csv(tmp_path / "ann.csv", {"id": [2, 3], "label": ["B", "C"]})
    prepare_store(
        {"rows": str(tmp_path / "raw.csv"), "annotations": str(tmp_path / "ann.csv")},
        str(tmp_path / "out"),
    )
    table = read_table(str(tmp_path / "out"))
    assert table.column("label").to_pylist() == ["a", "B", "C"]


def test_prepare_runs_as_a_task_from_its_context(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", {"id": [1, 2], "x": [1.0, 2.0], "label": [0, 1]})
    write_csv(tmp_path / "b" / "b.csv", {"id": [3], "x": [3.0], "label": [1]})
    context = {
        "task": "prep",
        "inputs": {"first": str(tmp_path / "a.csv"), "second": str(tmp_path / "b")},
        "outputs": {"processed": str(tmp_path / "out")},
    }
    assert prepare(context=context, learning_rate=0.1, first="ignored")["rows"] == 3
    assert read_table(str(tmp_path / "out")).column("id").to_pylist() == [1, 2, 3]
    context["outputs"]["other"] = str(tmp_path / "other")
    with pytest.raises(PipelineError, match="writes one output"):
        prepare(context=context)


def test_prepare_sends_rows_to_the_splits_a_column_names(tmp_path: Path) -> None:
    write_csv(
        tmp_path / "a.csv",
        {"x": [1.0, 2.0, 3.0], "label": [0, 1, 0], "part": ["train", "test", "train"]},
    )
    prepare_store({"rows": str(tmp_path / "a.csv")}, str(tmp_path / "out"), split_column="part")
    assert open_store(tmp_path / "out").splits == {"train": 2, "test": 1}


def test_a_sample_store_input_is_read_as_its_rows(tmp_path: Path, iris_store: Path) -> None:
    more = write_csv(tmp_path / "more.csv", {k: v[:10] for k, v in iris_columns().items()})
    result = prepare_store({"old": str(iris_store), "new": str(more)}, str(tmp_path / "both"))
    assert result["read"] == {"old": 150, "new": 10}
    assert read_table(str(tmp_path / "both")).num_rows == 160


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "nowhere", "input 'rows' has no readable table: no such file"),
        (lambda root: (root / "notes.txt").write_text("hi") and root, "has no readable table: no "),
        (
            lambda root: (root / "t.parquet").write_bytes(b"not parquet") and root / "t.parquet",
            "t.parquet",
        ),
        (
            lambda root: write_csv(root / "empty.csv", {"id": pa.array([], pa.int64())}),
            "holds no rows",
        ),
    ],
)
def test_an_input_without_a_readable_table_is_a_clear_error(
    tmp_path: Path, make: Any, message: str
) -> None:
    root = tmp_path / "in"
    root.mkdir()
    path = make(root)
    with pytest.raises(DataError, match=message) as caught:
        prepare_store({"rows": str(path)}, str(tmp_path / "out"))
    assert str(root) in caught.value.render()
    assert not (tmp_path / "out" / "LATEST").exists()


def test_bad_annotations_are_clear_errors(tmp_path: Path) -> None:
    rows = write_csv(tmp_path / "raw.csv", {"id": [1, 2], "x": [1.0, 2.0]})
    no_label = write_csv(tmp_path / "a1.csv", {"id": [1], "class": [0]})
    twice = write_csv(tmp_path / "a2.csv", {"id": [1, 1], "label": [0, 1]})
    other = write_csv(tmp_path / "a3.csv", {"id": [7, 8], "label": [0, 1]})
    cases = [
        (no_label, "no column 'label'"),
        (twice, r"annotated more than once: \[1\]"),
        (other, "no row has a label"),
    ]
    for labels_file, message in cases:
        with pytest.raises(DataError, match=message):
            prepare_store(
                {"raw": str(rows), "annotations": str(labels_file)}, str(tmp_path / "out")
            )
    no_id = write_csv(tmp_path / "noid.csv", {"x": [1.0]})
    with pytest.raises(DataError, match="no 'id' column to join the annotations on"):
        prepare_store({"raw": str(no_id), "annotations": str(other)}, str(tmp_path / "out"))


def test_inputs_with_different_columns_are_refused(tmp_path: Path) -> None:
    a = write_csv(tmp_path / "a.csv", {"x": [1.0], "label": [0]})
    b = write_csv(tmp_path / "b.csv", {"y": [1.0], "label": [0]})
    with pytest.raises(DataError, match="same columns"):
        prepare_store({"a": str(a), "b": str(b)}, str(tmp_path / "out"))


# ------------------------------------------------------------------ training, evaluation


def test_linear_training_learns_iris_and_is_deterministic(tmp_path: Path, iris_store: Path) -> None:
    settings = {"learning_rate": 0.1, "batch_size": 16, "epochs": 30, "seed": 3}
    first = train(str(iris_store), str(tmp_path / "m1"), **settings, unrelated="ignored")
    again = train(str(iris_store), str(tmp_path / "m2"), **settings)
    assert first == again
    one, two = LinearModel.load(str(tmp_path / "m1")), LinearModel.load(str(tmp_path / "m2"))
    assert np.array_equal(one.weights, two.weights) and np.array_equal(one.bias, two.bias)
    other = train(str(iris_store), str(tmp_path / "m3"), **{**settings, "seed": 4})
    assert other["loss"] != first["loss"]
    meta = json.loads((tmp_path / "m1" / "model.json").read_text())
    assert meta["classes"] == [0, 1, 2]
    assert meta["features"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert len(meta["metrics"]) == 30 and meta["metrics"][-1]["accuracy"] == first["accuracy"]
    assert len(meta["stats"]["mean"]) == 4
    result = evaluate(str(tmp_path / "m1"), str(iris_store), str(tmp_path / "eval"))
    assert result["accuracy"] > 0.8
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 150 and metrics["unknown_labels"] == 0
    assert {k: v["n"] for k, v in metrics["per_class"].items()} == {"0": 50, "1": 50, "2": 50}
    assert sum(v["correct"] for v in metrics["per_class"].values()) == round(
        150 * metrics["accuracy"]
    )


def test_incremental_training_starts_from_the_base_model(tmp_path: Path) -> None:
    columns = iris_columns()
    first = {k: v[:100] for k, v in columns.items()}  # classes 0 and 1 only
    write_csv(tmp_path / "old.csv", first)
    write_csv(tmp_path / "new.csv", columns)
    train(str(tmp_path / "old.csv"), str(tmp_path / "base"), learning_rate=0.1, epochs=20)
    base = LinearModel.load(str(tmp_path / "base"))
    assert base.classes == [0, 1]
    result = train(
        str(tmp_path / "new.csv"),
        str(tmp_path / "next"),
        base_model=str(tmp_path / "base"),
        learning_rate=0.1,
        epochs=50,
        incremental_ratio=0.1,
    )
    assert result["epochs"] == 5
    grown = LinearModel.load(str(tmp_path / "next"))
    assert grown.classes == [0, 1, 2]  # a new class joins with zero weights, then learns
    assert np.array_equal(grown.mean, base.mean)  # the base's standardisation is kept
    meta = json.loads((tmp_path / "next" / "model.json").read_text())
    assert meta["base_model"] == str(tmp_path / "base") and meta["epochs_run"] == 5
    # A base path with no model yet (the first round of the loop) means a full training.
    fresh = train(
        str(tmp_path / "new.csv"), str(tmp_path / "f"), base_model=str(tmp_path / "none"), epochs=3
    )
    assert fresh["epochs"] == 3


def test_evaluation_counts_labels_the_model_never_saw(tmp_path: Path) -> None:
    write_csv(
        tmp_path / "train.csv", {"x": [0.0, 0.1, 1.0, 1.1], "label": ["lo", "lo", "hi", "hi"]}
    )
    write_csv(tmp_path / "test.csv", {"x": [0.05, 1.05, 5.0], "label": ["lo", "hi", "huge"]})
    train(str(tmp_path / "train.csv"), str(tmp_path / "m"), learning_rate=0.5, epochs=50)
    result = evaluate(str(tmp_path / "m"), str(tmp_path / "test.csv"), str(tmp_path / "e"))
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["unknown_labels"] == 1 and result["n"] == 3
    assert result["accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(DataError, match="no label column 'kind'"):
        evaluate(
            str(tmp_path / "m"),
            str(tmp_path / "test.csv"),
            str(tmp_path / "e2"),
            label_column="kind",
        )
    with pytest.raises(DataError, match="not a model folder"):
        evaluate(str(tmp_path / "e"), str(tmp_path / "test.csv"), str(tmp_path / "e3"))


# ------------------------------------------------------------------ deployment


def test_deploy_copies_the_model_and_records_where_it_came_from(
    tmp_path: Path, iris_store: Path
) -> None:
    train(str(iris_store), str(tmp_path / "model"), epochs=2)
    context = {"run_id": "r1", "task": "deploy", "attempt": 1, "image": "img:1"}
    result = deploy(str(tmp_path / "model"), str(tmp_path / "deployed"), context=context, epochs=3)
    assert result["files"] == 3
    assert LinearModel.load(str(tmp_path / "deployed")).classes == [0, 1, 2]
    record = json.loads((tmp_path / "deployed" / "deployment.json").read_text())
    assert record["source"] == str(tmp_path / "model") and record["run_id"] == "r1"
    (tmp_path / "weights.bin").write_bytes(b"\x00" * 8)
    deploy(str(tmp_path / "weights.bin"), str(tmp_path / "d2"))
    assert sorted(p.name for p in (tmp_path / "d2").iterdir()) == ["deployment.json", "weights.bin"]
    with pytest.raises(DataError, match="no model to deploy"):
        deploy(str(tmp_path / "absent"), str(tmp_path / "d3"))
