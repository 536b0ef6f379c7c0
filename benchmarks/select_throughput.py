# ruff: noqa: T201
"""Issue 6: what ``dataset.sort_by_length`` buys the selection stage. Scoring throughput
(records/s) of ``stagewise.select.router.score`` with ``sort_by_length: true`` (records
batched in descending order of their token count) against ``false`` (file order), same
model, same data, same batch.

The model: the tiny converted Qwen2 of ``select_quality.py`` (hidden 64, 4 layers, 1500
pretraining steps; built once in the workdir and shared by both scripts), its gates as
converted (no warmup: the gates' values do not change the work). The data: ``--records``
(default 512) docstring chat records, half clean and half corrupted
(``clean_and_corrupted``, several data seeds when one does not give enough), shuffled
once with a fixed seed, so that file order mixes short and long records as a real pool
does; ``max_seq_len`` 256, ``data_process.batch_size`` 32.

Each timed run is a whole ``score()`` call on a fresh ``output_dir`` (model loading, the
batches, each batch's progress file, the router file). Its batch loop alone (from the
first record encoded to the last batch saved, timed by wrapping the module's ``encode``
and through ``on_batch``) is reported too. One untimed run first; then rounds alternate
the two settings (``--runs``, default 5); figures are medians over rounds, with the lowest
and highest single-round ratio. ``torch.set_num_threads(1)`` for stable timings.

The padding share of each order (padded tokens / all tokens of the batches) comes from
the records' token lengths (``stagewise.select.encoding.encode`` with the model's
tokenizer); also, as a diagnostic, for batches sorted by characters (seed 001's key)
rather than by token count (the router's). The router files of the two settings are
compared: the same gates and perplexities whatever the batching.

    .venv/bin/python benchmarks/select_throughput.py           # about 20 s
    .venv/bin/python benchmarks/select_throughput.py --quick   # smoke run, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import shutil
import statistics
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from _report import table
from select_quality import build_model, write_jsonl

from stagewise.config.loading import dump_yaml
from stagewise.config.selection import ScoreConfig, load_stage_config
from stagewise.select import router
from stagewise.select.docstrings import clean_and_corrupted
from stagewise.select.encoding import encode
from stagewise.select.gate import quiet_transformers
from stagewise.select.records import ChatRecord, read_records

CORES = os.cpu_count() or 1
SORTED, UNSORTED = "sorted", "unsorted"
MAX_LEN, BATCH = 256, 32


def make_pool(path: Path, records: int) -> Path:
    """``records`` clean and corrupted docstring records in a shuffled file order."""
    sets = max(1, math.ceil(records / 256))
    per = math.ceil(records / (2 * sets))
    pool: list[dict[str, Any]] = []
    for seed in range(sets):
        clean, bad = clean_and_corrupted(per, seed)
        pool += [r | {"id": f"{r['id']}_s{seed}"} for r in clean + bad]
    random.Random(0).shuffle(pool)
    return write_jsonl(path, pool[:records])


def write_config(folder: Path, model: Path, pool: Path) -> Path:
    data = {
        "stage": "selection",
        "selector_model": {"path": str(model)},
        "dataset": {
            "data_path": [str(pool)],
            "shuffle": False,
            "sort_by_length": True,
            "max_seq_len": MAX_LEN,
        },
        "data_process": {"batch_size": BATCH},
    }
    path = folder / "stage_2_selection.yaml"
    path.write_text(dump_yaml(data), encoding="utf-8")
    return path


@contextlib.contextmanager
def loop_clock(found: dict[str, float]) -> Iterator[None]:
    """Wraps ``router.encode`` to mark when the first record is encoded."""
    original = router.encode

    def timed_encode(*args: Any, **kwargs: Any) -> Any:
        found.setdefault("loop_start", time.perf_counter())
        return original(*args, **kwargs)

    router.encode = timed_encode
    try:
        yield
    finally:
        router.encode = original


def one_run(config_path: Path, out: Path, sort: bool, records: int) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    config, warnings = load_stage_config(
        ScoreConfig,
        config_path,
        [f"output_dir={json.dumps(str(out))}", f"dataset.sort_by_length={str(sort).lower()}"],
    )
    if warnings:
        raise RuntimeError("; ".join(w.render() for w in warnings))
    found: dict[str, float] = {}

    def on_batch(_number: int) -> None:
        found["loop_end"] = time.perf_counter()

    lines: list[str] = []
    with loop_clock(found):
        began = time.perf_counter()
        result = router.score(config, echo=lines.append, on_batch=on_batch)  # type: ignore[arg-type]
        ended = time.perf_counter()
    if result.batches_run != math.ceil(records / BATCH):
        raise RuntimeError(f"score ran {result.batches_run} batches")
    total, loop = ended - began, found["loop_end"] - found["loop_start"]
    return {"total": total, "loop": loop, "rate": records / total, "loop_rate": records / loop}


def padding(lengths: Sequence[int], order: Sequence[int]) -> tuple[int, int]:
    """(padded tokens, all tokens) of the batches of ``order``."""
    padded = every = 0
    for start in range(0, len(order), BATCH):
        batch = [lengths[i] for i in order[start : start + BATCH]]
        width = max(batch)
        padded += sum(width - n for n in batch)
        every += width * len(batch)
    return padded, every


def orders(records: Sequence[ChatRecord], lengths: Sequence[int]) -> dict[str, list[int]]:
    indices = list(range(len(records)))
    return {
        UNSORTED: indices,
        SORTED: sorted(indices, key=lambda i: (-lengths[i], i)),  # as the router does
        "by characters (seed 001's key; diagnostic)": sorted(
            indices, key=lambda i: (-records[i].length, i)
        ),
    }


def same_results(a: Path, b: Path) -> float:
    """The largest difference between two runs' router files (gates and perplexities)."""
    first, second = (
        torch.load(next((p / router.ROUTER_FOLDER).glob("*.pt")), weights_only=True) for p in (a, b)
    )
    if first["sample_ids"] != second["sample_ids"]:
        raise RuntimeError("the two settings scored different records")
    gates = (first["quality_gates"] - second["quality_gates"]).abs().max()
    ppl = (first["perplexities"] - second["perplexities"]).abs() / first["perplexities"].clamp_min(
        1
    )
    return float(max(gates, ppl.max()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/stagewise-bench")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--runs", type=int, default=None, help="rounds")
    parser.add_argument("--records", type=int, default=None, help="records scored")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        workdir, runs, records = Path(args.workdir) / "quick", 1, 40
        steps, hidden, layers = 40, 32, 2
    else:
        workdir, runs, records = Path(args.workdir), 5, 512
        steps, hidden, layers = 1500, 64, 4
    runs, records = args.runs or runs, args.records or records
    torch.set_num_threads(1)
    logging.getLogger("stagewise").setLevel(logging.WARNING)
    workdir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    print(
        f"# select_throughput: {CORES} cores, torch {torch.__version__} with "
        f"set_num_threads({torch.get_num_threads()}), workdir {workdir}, runs {runs}"
    )
    quiet_transformers()
    model = build_model(workdir, steps, hidden, layers)
    folder = workdir / "select-throughput"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pool = make_pool(folder / "pool.jsonl", records)
    config = write_config(folder, model, pool)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=True)
    chats = read_records([str(pool)])
    lengths = [len(encode(r, tokenizer, MAX_LEN).ids) for r in chats]
    shares = {name: padding(lengths, order) for name, order in orders(chats, lengths).items()}

    outs = {SORTED: folder / "out-sorted", UNSORTED: folder / "out-unsorted"}
    one_run(config, folder / "out-warmup", True, records)  # untimed: imports, caches
    shutil.rmtree(folder / "out-warmup", ignore_errors=True)
    found: dict[str, list[dict[str, float]]] = {SORTED: [], UNSORTED: []}
    for run in range(runs):
        for name in [SORTED, UNSORTED] if run % 2 == 0 else [UNSORTED, SORTED]:
            found[name].append(one_run(config, outs[name], name == SORTED, records))
    difference = same_results(outs[SORTED], outs[UNSORTED])

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in found[name])

    def single(key: str) -> str:
        r = [s[key] / u[key] for s, u in zip(found[SORTED], found[UNSORTED], strict=True)]
        return f"{min(r):.2f}-{max(r):.2f}x"

    rows = []
    for key, label in (
        ("rate", "records/s, whole score() call"),
        ("loop_rate", "records/s, the batch loop"),
    ):
        s, u = median(SORTED, key), median(UNSORTED, key)
        rows.append([label, f"{s:.1f}", f"{u:.1f}", f"{s / u:.2f}x", single(key)])
    for key, label in (("total", "score() call"), ("loop", "batch loop")):
        s, u = median(SORTED, key), median(UNSORTED, key)
        rows.append([f"seconds, {label}", f"{s:.3f}", f"{u:.3f}", f"{s / u:.2f}x", single(key)])
    (sp, sa), (up, ua) = shares[SORTED], shares[UNSORTED]
    rows.append(
        [
            "padding share (padded / all tokens)",
            f"{sp / sa:.1%}",
            f"{up / ua:.1%}",
            "",
            "",
        ]
    )
    rows.append(["tokens in the batches", f"{sa:,}", f"{ua:,}", f"{sa / ua:.2f}x", ""])
    print()
    print(
        table(
            f"Scoring {records} records (max_seq_len {MAX_LEN}, batch {BATCH}, "
            f"{sum(lengths):,} real tokens): sort_by_length true vs false, median of {runs}",
            ["what", "sorted", "unsorted", "ratio: sorted / unsorted", "ratio, single rounds"],
            rows,
        )
    )
    pad_rows = [
        [name, f"{p:,}", f"{a:,}", f"{p / a:.1%}", f"{(a - p) / a:.1%}"]
        for name, (p, a) in shares.items()
    ]
    print()
    print(
        table(
            "Padding of each batch order (from the records' token lengths)",
            ["order", "padded tokens", "all tokens", "padding share", "real share"],
            pad_rows,
        )
    )
    print(
        f"\n# the two settings' router files differ by at most {difference:.2e} "
        "(gates; perplexities relative to their value); "
        f"total {time.perf_counter() - began:.1f} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": found, "padding": shares}, indent=2))


if __name__ == "__main__":
    main()
