"""Chat records to select from, made from the docstrings that ship with Python.

    python make_data.py OUT [--clean 96]

OUT/pool.jsonl: a dataset 'docs' of questions about standard-library functions, half
answered by the function's own docstring (ids docs_clean_<i>), half by a damaged one
(shuffled words, random characters, a repeated fragment, cut mid-sentence: ids
docs_<corruption>_<i>); OUT/target.jsonl: a few more clean records, the target task.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stagewise.select.docstrings import clean_and_corrupted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--clean", type=int, default=96, help="clean records in the pool")
    parser.add_argument("--targets", type=int, default=32, help="records of the target task")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    clean, bad = clean_and_corrupted(args.clean + args.targets, args.seed)
    pool, targets = clean[: args.clean] + bad[: args.clean], clean[args.clean :]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "pool.jsonl", "w", encoding="utf-8") as out:
        out.writelines(json.dumps(r) + "\n" for r in pool)
    with open(args.out / "target.jsonl", "w", encoding="utf-8") as out:
        out.writelines(json.dumps(r | {"dataset": "target"}) + "\n" for r in targets)
    print(
        f"{len(pool)} pool records ({args.clean} clean) and {len(targets)} target records in {args.out}"
    )


if __name__ == "__main__":
    main()
