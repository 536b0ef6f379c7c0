"""Write the raw data of the incremental-learning pipeline under DIR.

    python make_data.py DIR [--round 1|2] [--dataset wine|digits] [--seed 0]

For incremental-learning.yaml (seed 002), under DIR/user (mount it as /mnt/user):
  data/raw/samples.csv            rows of scikit-learn's bundled wine (or digits) data:
                                  an ``id`` and the numeric features, no label
  data/annotations/labels.csv     ``id,label`` for 90% of those rows (the rest stay
                                  unlabelled, and data_processing leaves them out)
  data/test/test.csv              held-out rows with their ``label``
Round 1 writes 60% of the training rows; round 2 replaces raw/ and annotations/ with the
other 40%: the new data that an incremental update of the deployed model learns from.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits, load_wine


def write_tables(root: Path, dataset: str, round_: int, seed: int) -> None:
    data = load_wine() if dataset == "wine" else load_digits()
    names = [_column(n) for n in data.feature_names]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.target))
    test, train = order[: len(order) // 5], order[len(order) // 5 :]
    cut = int(len(train) * 0.6)
    rows = train[:cut] if round_ == 1 else train[cut:]
    for folder in ("raw", "annotations", "test"):
        shutil.rmtree(root / "data" / folder, ignore_errors=True)
        (root / "data" / folder).mkdir(parents=True)
    with open(root / "data/raw/samples.csv", "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", *names])
        for i in rows:
            writer.writerow([int(i), *(float(v) for v in data.data[i])])
    labelled = rows[rng.random(len(rows)) < 0.9]
    with open(root / "data/annotations/labels.csv", "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "label"])
        writer.writerows([int(i), int(data.target[i])] for i in labelled)
    with open(root / "data/test/test.csv", "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", *names, "label"])
        for i in test:
            writer.writerow([int(i), *(float(v) for v in data.data[i]), int(data.target[i])])
    print(
        f"{dataset}, round {round_}: {len(rows)} raw rows ({len(labelled)} annotated), "
        f"{len(test)} test rows under {root / 'data'}"
    )


def _column(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--round", type=int, choices=(1, 2), default=1)
    parser.add_argument("--dataset", choices=("wine", "digits"), default="wine")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    write_tables(args.dir / "user", args.dataset, args.round, args.seed)


if __name__ == "__main__":
    main()
