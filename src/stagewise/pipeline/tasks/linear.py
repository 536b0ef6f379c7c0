"""The built-in ``training`` and ``evaluation`` tasks: a linear classifier in numpy.

This is the built-in linear classifier until the trainer issue plugs its trainer into
``training``. It is real, if small: multinomial logistic regression trained with
mini-batch SGD on the numeric columns of a table (a sample store, or CSV/JSONL/Parquet
files), enough to run seed 002's incremental-learning pipeline end to end.

- Features: every integer or float column but the label and ``id_column``. They are
  standardised with the training data's mean and standard deviation; a missing value
  becomes the mean.
- Labels: the ``label_column``; rows without one are left out. Classes are the labels
  seen, sorted.
- Training: weights start at zero (or at ``base_model``'s), each epoch visits the rows
  in an order drawn from ``seed``, one SGD step per ``batch_size`` rows. The result is a
  pure function of the data, the parameters and the seed.
- Incremental training (seed 002's loop): when ``base_model`` is a model folder, training
  starts from its weights and keeps its standardisation (the weights live in that
  space); classes it has not seen are added with zero weights. Such an update runs
  ``incremental_ratio`` of ``epochs`` (at least one) when ``incremental_ratio`` is set,
  all of them otherwise. A ``base_model`` path that does not exist (or an empty folder)
  means a first, full training.

The model folder holds ``weights.npz`` (weights, bias, mean, std) and ``model.json``
(format, classes, feature names, statistics, parameters, and loss and accuracy per epoch;
also on the ``val`` split when the training store has one).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stagewise.data.samples import is_store, open_store
from stagewise.errors import DataError
from stagewise.pipeline.tasks.data import read_table

FORMAT = "stagewise-linear/1"
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.npz"
METRICS_FILE = "metrics.json"


@dataclass
class LinearModel:
    classes: list[Any]
    features: list[str]
    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray  # (features, classes)
    bias: np.ndarray  # (classes,)

    def standardise(self, x: np.ndarray) -> np.ndarray:
        x = np.where(np.isnan(x), self.mean, x)
        return (x - self.mean) / self.std

    def probabilities(self, z: np.ndarray) -> np.ndarray:
        return _softmax(z @ self.weights + self.bias)

    def save(self, folder: str, info: dict[str, Any]) -> None:
        os.makedirs(folder, exist_ok=True)
        np.savez(
            os.path.join(folder, WEIGHTS_FILE),
            weights=self.weights,
            bias=self.bias,
            mean=self.mean,
            std=self.std,
        )
        meta = {
            "format": FORMAT,
            "classes": self.classes,
            "features": self.features,
            "stats": {"mean": self.mean.tolist(), "std": self.std.tolist()},
            **info,
        }
        Path(folder, MODEL_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str) -> LinearModel:
        try:
            meta = json.loads(Path(folder, MODEL_FILE).read_text(encoding="utf-8"))
            with np.load(os.path.join(folder, WEIGHTS_FILE)) as arrays:
                found = {k: arrays[k] for k in ("weights", "bias", "mean", "std")}
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(
                f"not a model folder of the built-in linear classifier: {exc}",
                location=folder,
                hint=f"a model folder holds {MODEL_FILE} and {WEIGHTS_FILE} (written by a "
                "training task)",
            ) from None
        if meta.get("format") != FORMAT:
            raise DataError(
                f"model format {meta.get('format')!r}, expected {FORMAT!r}",
                location=os.path.join(folder, MODEL_FILE),
            )
        return cls(meta["classes"], meta["features"], **found)


def train(
    training_data: str,
    trained_model: str,
    base_model: str | None = None,
    learning_rate: float = 0.001,
    batch_size: int = 32,
    epochs: int = 100,
    seed: int = 0,
    incremental_ratio: float | None = None,
    label_column: str = "label",
    id_column: str = "id",
    **kwargs: Any,
) -> dict[str, Any]:
    """The ``training`` task: fit the classifier and write the model folder."""
    learning_rate, batch_size, epochs = float(learning_rate), int(batch_size), int(epochs)
    if learning_rate <= 0 or batch_size < 1 or epochs < 1:
        raise DataError(
            f"learning_rate must be > 0, batch_size and epochs >= 1 (found {learning_rate}, "
            f"{batch_size}, {epochs})",
            hint="fix the pipeline's parameters",
        )
    table = read_table(training_data, name="training_data", split="train")
    base = _base(base_model)
    if base is None:
        x, labels, features = _columns(table, label_column, id_column, None, training_data)
        model = _fresh(x, features, sorted(set(labels)))
        runs = epochs
    else:
        x, labels, _ = _columns(table, label_column, id_column, base.features, training_data)
        model = _with_classes(base, labels)
        runs = max(1, math.ceil(epochs * float(incremental_ratio))) if incremental_ratio else epochs
    z, y = model.standardise(x), _indices(model.classes, labels)
    val = _val_split(training_data, model, label_column)
    rng = np.random.default_rng(int(seed))
    history = []
    for epoch in range(1, runs + 1):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch_size):
            rows = order[start : start + batch_size]
            _step(model, z[rows], y[rows], learning_rate)
        loss, accuracy = _loss_accuracy(model, z, y)
        entry = {"epoch": epoch, "loss": loss, "accuracy": accuracy}
        if val is not None:
            entry["val_loss"], entry["val_accuracy"] = _loss_accuracy(model, *val)
        history.append(entry)
    info = {
        "label_column": label_column,
        "rows": len(y),
        "base_model": base_model if base is not None else None,
        "epochs_run": runs,
        "parameters": {
            "learning_rate": learning_rate,
            "batch_size": batch_size,
            "epochs": epochs,
            "seed": int(seed),
            "incremental_ratio": incremental_ratio,
        },
        "metrics": history,
    }
    model.save(trained_model, info)
    return {
        "rows": len(y),
        "epochs": runs,
        **{k: v for k, v in history[-1].items() if k != "epoch"},
    }


def evaluate(
    model: str, test_data: str, evaluation_results: str, label_column: str = "label", **kwargs: Any
) -> dict[str, Any]:
    """The ``evaluation`` task: accuracy, loss and per-class counts in metrics.json."""
    found = LinearModel.load(model)
    table = read_table(test_data, name="test_data", split="test")
    x, labels, _ = _columns(table, label_column, None, found.features, test_data)
    z = found.standardise(x)
    probabilities = found.probabilities(z)
    predicted = probabilities.argmax(axis=1)
    index = {c: i for i, c in enumerate(found.classes)}
    truth = np.array([index.get(label, -1) for label in labels], dtype=np.int64)
    known = truth >= 0
    loss = (
        float(-np.log(np.clip(probabilities[known, truth[known]], 1e-12, None)).mean())
        if known.any()
        else None
    )
    per_class = {}
    for i, label in enumerate(found.classes):
        per_class[str(label)] = {
            "n": int((truth == i).sum()),
            "correct": int(((truth == i) & (predicted == i)).sum()),
            "predicted": int((predicted == i).sum()),
        }
    metrics = {
        "accuracy": float((predicted == truth).mean()) if len(truth) else None,
        "loss": loss,
        "n": len(truth),
        "unknown_labels": int((~known).sum()),
        "per_class": per_class,
        "model": model,
        "test_data": test_data,
        "label_column": label_column,
    }
    os.makedirs(evaluation_results, exist_ok=True)
    Path(evaluation_results, METRICS_FILE).write_text(
        json.dumps(metrics, indent=2) + "\n", encoding="utf-8"
    )
    return {"accuracy": metrics["accuracy"], "loss": loss, "n": len(truth)}


# ---------------------------------------------------------------------------- helpers


def _base(path: str | None) -> LinearModel | None:
    if not path or not os.path.exists(path):
        return None
    if os.path.isdir(path) and not os.listdir(path):
        return None
    return LinearModel.load(path)


def _columns(
    table: pa.Table,
    label_column: str,
    id_column: str | None,
    features: list[str] | None,
    where: str,
) -> tuple[np.ndarray, list[Any], list[str]]:
    """(feature matrix, labels, feature names) of the rows that have a label."""
    if label_column not in table.column_names:
        raise DataError(
            f"no label column '{label_column}'",
            location=where,
            hint=f"the columns are {', '.join(table.column_names)}; set label_column",
        )
    table = table.filter(pc.is_valid(table.column(label_column)))
    if features is None:
        features = [
            f.name
            for f in table.schema
            if f.name not in (label_column, id_column)
            and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
        ]
        if not features:
            raise DataError(
                "no numeric feature columns",
                location=where,
                hint="the linear classifier learns from integer and float columns",
            )
    absent = [f for f in features if f not in table.column_names]
    if absent:
        raise DataError(
            f"the model's features {absent[:5]} are not columns here",
            location=where,
            hint="give this data the columns the model was trained on",
        )
    x = np.column_stack(
        [table.column(f).to_numpy(zero_copy_only=False).astype(np.float64) for f in features]
    ).reshape(table.num_rows, len(features))
    labels = [_plain(v) for v in table.column(label_column).to_pylist()]
    if not labels:
        raise DataError("no row has a label", location=where, hint=f"fill '{label_column}'")
    return x, labels, features


def _plain(value: Any) -> Any:
    # 2.0 and 2 are the same class; JSON keeps them apart, so whole floats become ints.
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _fresh(x: np.ndarray, features: list[str], classes: list[Any]) -> LinearModel:
    with np.errstate(all="ignore"):
        mean = np.nan_to_num(np.nanmean(x, axis=0)) if len(x) else np.zeros(x.shape[1])
        std = np.nan_to_num(np.nanstd(x, axis=0))
    std[std == 0] = 1.0
    k = len(classes)
    return LinearModel(classes, features, mean, std, np.zeros((len(features), k)), np.zeros(k))


def _with_classes(base: LinearModel, labels: list[Any]) -> LinearModel:
    new = sorted(set(labels) - set(base.classes))
    if not new:
        return base
    weights = np.hstack([base.weights, np.zeros((base.weights.shape[0], len(new)))])
    bias = np.concatenate([base.bias, np.zeros(len(new))])
    return LinearModel(base.classes + new, base.features, base.mean, base.std, weights, bias)


def _indices(classes: list[Any], labels: list[Any]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[label] for label in labels], dtype=np.int64)


def _val_split(
    path: str, model: LinearModel, label_column: str
) -> tuple[np.ndarray, np.ndarray] | None:
    if not is_store(path) or "val" not in open_store(path).splits:
        return None
    x, labels, _ = _columns(read_table(path, split="val"), label_column, None, model.features, path)
    keep = [i for i, label in enumerate(labels) if label in set(model.classes)]
    return model.standardise(x[keep]), _indices(model.classes, [labels[i] for i in keep])


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _step(model: LinearModel, z: np.ndarray, y: np.ndarray, learning_rate: float) -> None:
    """One SGD step on the mean cross-entropy of a batch."""
    gradient = model.probabilities(z)
    gradient[np.arange(len(y)), y] -= 1.0
    gradient /= len(y)
    model.weights -= learning_rate * (z.T @ gradient)
    model.bias -= learning_rate * gradient.sum(axis=0)


def _loss_accuracy(
    model: LinearModel, z: np.ndarray, y: np.ndarray
) -> tuple[float | None, float | None]:
    if not len(y):
        return None, None  # not NaN: model.json is JSON
    p = model.probabilities(z)
    loss = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())
    return loss, float((p.argmax(axis=1) == y).mean())
