"""The trained model against two baselines, on exactly the windows the trainer evaluated.

Usage: python report.py TRAIN_CONFIG [--json REPORT]   (run where the training ran)

- **model**: the trainer's full evaluation on every test window (``result.json`` in
  ``training.output_dir``: ``final_eval_overall_mae`` / ``_rmse`` / ``_mape``).
- **last value**: each window's last input reading, repeated for the 12 steps ahead.
- **seasonal**: the reading at the same time one week earlier, for each step ahead.

The baselines read the store's series itself (not the windows), so "one week earlier" is
exactly ``7 * 86400 / freq`` steps back, which may reach into the training steps (the
past, known at forecast time). Their windows and target values are the trainer's own:
each dataset's test windows come from the same stores as ``data.val_stores``, and their
targets are checked equal to what the trainer reads. The store keeps raw readings (its
normalisation statistics are recorded, not applied), and the model forecasts in the
same raw units. The metrics are the trainer's own ``Tally``: MAE and RMSE over every
target value, MAPE over targets above 1e-3. Missing readings are whatever the store's
``missing`` policy made them (``ffill`` in run.sh: the sensor's previous reading); they
count as targets for the model and both baselines alike.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stagewise.config.training import load_training_config
from stagewise.data.samples import SampleStore, open_store
from stagewise.train.data import read_store
from stagewise.train.metrics import Tally

WEEK_SECONDS = 7 * 86_400
METHODS = ("model", "last_value", "seasonal")
LABELS = {"model": "model", "last_value": "last value", "seasonal": "seasonal (1 week)"}
METRICS = ("mae", "rmse", "mape")


def baselines(store: SampleStore, name: str, targets: np.ndarray) -> dict[str, np.ndarray]:
    """Both baselines' forecasts ``[windows, Q, N, C]`` for the store's test windows."""
    stats, windows = store.metadata.stats, store.metadata.windows
    if windows is None:
        sys.exit(f"{name}: not a time-series store (no windows)")
    series = store.array(windows.series)  # [T, N, C], raw readings
    test = store.split("test")
    starts = np.asarray(test.take(np.arange(len(test)))["start"], dtype=np.int64)
    p, q = windows.input_len, windows.output_len
    steps = starts[:, None] + p + np.arange(q)  # the target steps of every window
    if not np.array_equal(series[steps], targets, equal_nan=True):
        sys.exit(f"{name}: the test targets differ from what the trainer reads")
    freq = int(stats["freq_seconds"])
    if WEEK_SECONDS % freq:
        sys.exit(f"{name}: a week is not a whole number of {freq}s steps")
    week = WEEK_SECONDS // freq
    if steps.min() < week:
        sys.exit(
            f"{name}: the first test target is step {steps.min()}, less than a week "
            f"({week} steps) into the series: synthesize a longer history"
        )
    last = np.repeat(series[starts + p - 1][:, None], q, axis=1)
    return {"last_value": last, "seasonal": series[steps - week]}


def tally_of(names: list[str], forecasts: dict[str, np.ndarray], targets: dict) -> Tally:
    """The trainer's metrics of one method's forecasts."""
    tally = Tally(names, "forecasting")
    for number, name in enumerate(names):
        guess = torch.from_numpy(np.ascontiguousarray(forecasts[name]))
        truth = torch.from_numpy(np.ascontiguousarray(targets[name]))
        per_sample = (guess - truth).abs().flatten(1).mean(1)
        tally.add(torch.full((len(truth),), number), per_sample, guess, truth)
    return tally


def report(config_path: str) -> dict[str, Any]:
    config, _ = load_training_config(config_path)
    result_path = Path(config.training.output_dir) / "result.json"
    if not result_path.exists():
        sys.exit(f"no {result_path}: train first (stagewise train {config_path})")
    result = json.loads(result_path.read_text())
    final = result["final"]
    names: list[str] = []
    targets: dict[str, np.ndarray] = {}
    forecasts: dict[str, dict[str, np.ndarray]] = {"last_value": {}, "seasonal": {}}
    missing: dict[str, str] = {}
    for location in config.data.val_stores:
        store = open_store(location)
        for name, table in read_store(location, config, split="test", task="forecasting").items():
            names.append(name)
            targets[name] = table.targets
            for method, values in baselines(store, name, table.targets).items():
                forecasts[method][name] = values
            policy = store.metadata.transform.get("timeseries", {}).get("missing", "?")
            missing[name] = f"{policy} ({store.metadata.stats.get('missing_cells', 0):,} cells)"
    windows = sum(len(t) for t in targets.values())
    if final.get("final_eval_overall_samples") != windows:
        sys.exit(
            f"the trainer evaluated {final.get('final_eval_overall_samples')} windows, "
            f"the baselines {windows}: train and report with the same config"
        )
    overall: dict[str, dict[str, float]] = {
        "model": {m: final[f"final_eval_overall_{m}"] for m in METRICS}
    }
    datasets: dict[str, dict[str, dict[str, float]]] = {
        n: {"model": {m: final[f"final_eval_{n}_{m}"] for m in METRICS}} for n in names
    }
    for method, values in forecasts.items():
        tally = tally_of(names, values, targets)
        overall[method] = {m: tally.overall()[m] for m in METRICS}
        for name, metrics in tally.per_dataset().items():
            datasets[name][method] = {m: metrics[m] for m in METRICS}
    ratios = {
        base: {m: overall["model"][m] / overall[base][m] for m in METRICS}
        for base in ("last_value", "seasonal")
    }
    first = targets[names[0]]
    return {
        "windows": windows,
        "horizon": int(first.shape[1]),
        "nodes": sum(int(t.shape[2]) for t in targets.values()),
        "target_values": sum(int(t.size) for t in targets.values()),
        "missing": missing,
        "evaluated_model": "best" if result.get("best") else "final",
        "overall": overall,
        "datasets": datasets,
        "ratios": ratios,
        "beats_both": {m: all(r[m] < 1 for r in ratios.values()) for m in METRICS},
    }


def render(data: dict[str, Any]) -> str:
    lines = [
        f"Test split: {data['windows']:,} windows of {len(data['datasets'])} datasets "
        f"({data['nodes']} sensors), {data['horizon']} steps ahead, "
        f"{data['target_values']:,} target values; the {data['evaluated_model']} model",
        "",
        f"{'':<22}{'MAE':>9}{'RMSE':>9}{'MAPE':>9}",
    ]
    for method in METHODS:
        row = data["overall"][method]
        lines.append(
            f"{LABELS[method]:<22}{row['mae']:>9.3f}{row['rmse']:>9.3f}{row['mape']:>9.2%}"
        )
    for base in ("last_value", "seasonal"):
        row = data["ratios"][base]
        label = f"model / {LABELS[base].split(' (')[0]}"
        lines.append(f"{label:<22}{row['mae']:>9.2f}{row['rmse']:>9.2f}{row['mape']:>9.2f}")
    lines.append("")
    for name, methods in data["datasets"].items():
        maes = ", ".join(f"{LABELS[m]} {methods[m]['mae']:.3f}" for m in METHODS)
        lines.append(f"{name} MAE: {maes}; missing readings: {data['missing'][name]}")
    won = [m.upper() for m, ok in data["beats_both"].items() if ok]
    lost = [m.upper() for m, ok in data["beats_both"].items() if not ok]
    verdict = f"the model beats both baselines on {', '.join(won) or 'nothing'}"
    lines.append(verdict + (f"; not on {', '.join(lost)}" if lost else ""))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the training config the model was trained with")
    parser.add_argument("--json", dest="json_path", help="also write the figures here")
    args = parser.parse_args()
    data = report(args.config)
    print(render(data))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
