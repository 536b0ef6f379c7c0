"""Synthetic traffic readings (``stagewise data synth traffic``): the shape of seed 004's
raw data, at any size, for demos, tests and benchmarks.

Nodes lie around a city centre. A node's flow is its base level times a daily profile
(morning and evening peaks, flatter and lower at weekends), times a slowly drifting
regional factor shared by nearby nodes (spatial correlation: each node mixes a few
AR(1) regional series by its distance to the regions' centres), plus noise. A share of
readings is dropped (missing). Output: ``records.<ext>`` with ``node, timestamp, value,
speed`` and ``nodes.csv`` with ``node, lat, lng``; written block by block, so memory stays
bounded whatever the size.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from stagewise.data.timeseries import parse_date

_REGIONS = 8
_BLOCK_CELLS = 1 << 20  # readings generated per block


@dataclass(frozen=True)
class SynthResult:
    records: Path
    nodes: Path
    rows: int


def _profile(seconds: np.ndarray) -> np.ndarray:
    hours = (seconds % 86_400) / 3600.0
    weekday = (seconds // 86_400 + 3) % 7
    peaks = np.exp(-((hours - 8.0) ** 2) / 2.0) + 0.9 * np.exp(-((hours - 18.0) ** 2) / 3.0)
    weekend = weekday >= 5
    level = 0.25 + np.where(weekend, 0.45 * peaks * 0.6 + 0.2, peaks)
    return np.asarray(level, dtype=np.float64)


def synth_traffic(
    output: str | Path,
    *,
    nodes: int = 200,
    steps: int = 2016,
    freq_seconds: int = 300,
    start: str = "20250919",
    missing: float = 0.02,
    seed: int = 0,
    format: str = "parquet",
) -> SynthResult:
    """Write ``nodes * steps`` readings (minus the missing share) into ``output``."""
    if nodes < 1 or steps < 1:
        raise ValueError("nodes and steps must be at least 1")
    if not 0 <= missing < 1:
        raise ValueError("missing must be in [0, 1)")
    if format not in ("parquet", "csv", "jsonl"):
        raise ValueError(f"format must be parquet, csv or jsonl, not {format!r}")
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    node_ids = np.arange(nodes, dtype=np.int64) + 100_000
    lat = 39.9 + rng.normal(0, 0.08, nodes)
    lng = 116.4 + rng.normal(0, 0.10, nodes)
    base = rng.lognormal(mean=5.0, sigma=0.5, size=nodes)  # vehicles per step
    centres = np.column_stack(
        [39.9 + rng.normal(0, 0.08, _REGIONS), 116.4 + rng.normal(0, 0.1, _REGIONS)]
    )
    distance = np.hypot(lat[:, None] - centres[None, :, 0], lng[:, None] - centres[None, :, 1])
    loading = np.exp(-((distance / 0.05) ** 2))
    loading /= loading.sum(axis=1, keepdims=True) + 1e-12
    regional = np.zeros(_REGIONS)
    first = parse_date(start)
    nodes_path = folder / "nodes.csv"
    pa_csv.write_csv(pa.table({"node": node_ids, "lat": lat, "lng": lng}), nodes_path)
    records_path = folder / f"records.{format}"
    schema = pa.schema(
        [
            ("node", pa.int64()),
            ("timestamp", pa.timestamp("s")),
            ("value", pa.float32()),
            ("speed", pa.float32()),
        ]
    )
    block = max(1, _BLOCK_CELLS // nodes)
    rows = 0
    writer: pq.ParquetWriter | pa_csv.CSVWriter | None = None
    jsonl = open(records_path, "w", encoding="utf-8") if format == "jsonl" else None  # noqa: SIM115
    try:
        if format == "parquet":
            writer = pq.ParquetWriter(records_path, schema, compression="snappy")
        elif format == "csv":
            writer = pa_csv.CSVWriter(records_path, schema)
        for t0 in range(0, steps, block):
            count = min(block, steps - t0)
            seconds = first + (t0 + np.arange(count, dtype=np.int64)) * freq_seconds
            drift = np.empty((count, _REGIONS))
            for i in range(count):  # AR(1) per region: slow, shared swings
                regional = 0.98 * regional + rng.normal(0, 0.03, _REGIONS)
                drift[i] = regional
            factor = 1.0 + drift @ loading.T  # (count, nodes)
            flow = base[None, :] * _profile(seconds)[:, None] * factor
            flow = flow * (1.0 + rng.normal(0, 0.05, flow.shape))
            flow = np.maximum(flow, 0.0)
            speed = 60.0 - 35.0 * np.clip(flow / (base[None, :] * 1.6), 0, 1)
            keep = rng.random(flow.shape) >= missing
            t_index, n_index = np.nonzero(keep)
            table = pa.table(
                {
                    "node": node_ids[n_index],
                    "timestamp": pa.array(seconds[t_index], pa.timestamp("s")),
                    "value": flow[t_index, n_index].astype(np.float32),
                    "speed": speed[t_index, n_index].astype(np.float32),
                },
                schema=schema,
            )
            rows += table.num_rows
            if jsonl is not None:
                _write_jsonl(jsonl, table)
            elif writer is not None:
                writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
        if jsonl is not None:
            jsonl.close()
    return SynthResult(records_path, nodes_path, rows)


def _write_jsonl(handle: object, table: pa.Table) -> None:
    stamps = table.column("timestamp").cast(pa.int64()).to_numpy()
    text = [
        f'{{"node": {n}, "timestamp": "{_iso(s)}", "value": {v:.3f}, "speed": {p:.3f}}}\n'
        for n, s, v, p in zip(
            table.column("node").to_numpy(),
            stamps,
            table.column("value").to_numpy(),
            table.column("speed").to_numpy(),
            strict=True,
        )
    ]
    handle.writelines(text)  # type: ignore[attr-defined]


def _iso(seconds: int) -> str:
    days, rest = divmod(int(seconds), 86_400)
    moment = dt.datetime(1970, 1, 1) + dt.timedelta(days=days, seconds=rest)
    return moment.strftime("%Y-%m-%d %H:%M:%S")
