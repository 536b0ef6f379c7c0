"""Write scikit-learn's bundled datasets as seed 003's JSONL: ``OUT/<dataset>/train.jsonl``
and ``test.jsonl`` (a stratified, seeded 75/25 split), each record ``{"id", "features",
"label", "dataset_name", "split"}``. Nothing is downloaded: the data ships with
scikit-learn.

    python make_datasets.py OUT_DIR
"""

import json
import sys
from pathlib import Path

from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.model_selection import train_test_split

SPLITS = ("train", "test")
DATASETS = {
    "digits": load_digits,  # 10 classes, 64 features (8x8 images)
    "wine": load_wine,  # 3 classes, 13 features
    "iris": load_iris,  # 3 classes, 4 features
    "breast_cancer": load_breast_cancer,  # 2 classes, 30 features
}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, load in DATASETS.items():
        features, labels = load(return_X_y=True)
        train_rows, _ = train_test_split(
            range(len(labels)), test_size=0.25, stratify=labels, random_state=0
        )
        train_set = set(train_rows)
        (out / name).mkdir(exist_ok=True)
        files = {s: (out / name / f"{s}.jsonl").open("w", encoding="utf-8") for s in SPLITS}
        for i, (row, label) in enumerate(zip(features, labels, strict=True)):
            split = "train" if i in train_set else "test"
            record = {
                "id": i,
                "features": [round(float(v), 6) for v in row],
                "label": int(label),
                "dataset_name": name,
                "split": split,
            }
            files[split].write(json.dumps(record) + "\n")
        for handle in files.values():
            handle.close()
        print(f"{name}: {len(labels)} records, {features.shape[1]} features -> {out / name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
