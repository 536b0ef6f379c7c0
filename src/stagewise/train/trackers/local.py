"""The trackers that need no service: ``metrics.jsonl`` (always) and TensorBoard."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stagewise.train.trackers.base import json_text, plain


class JsonLines:
    """``metrics.jsonl``: ``{"step", "time", "metrics"}`` per log call, ``{"event": name,
    ...payload}`` per event, ``{"summary": {...}}``; appended and flushed each call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("a", encoding="utf-8")
        if self._file.tell() and not _ends_with_newline(path):
            self._file.write("\n")  # a crash cut the last line: start clean after it

    def _write(self, line: Mapping[str, Any]) -> None:
        self._file.write(json_text(line) + "\n")
        self._file.flush()

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self._write({"step": step, "time": time.time(), "metrics": metrics})

    def event(self, name: str, payload: Mapping[str, Any]) -> None:
        self._write({"event": name, **{k: v for k, v in payload.items() if k != "event"}})

    def summary(self, values: Mapping[str, Any]) -> None:
        self._write({"summary": values})

    def close(self, failed: bool) -> None:
        self._file.close()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\n"


class TensorBoard:
    """Scalars by name and step; events and the summary as text (JSON)."""

    def __init__(self, log_dir: Path, resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: on resume, readers drop what the crashed run logged past the
        # checkpoint, so the curves do not fold back.
        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=resume_step, flush_secs=10)
        self._step = resume_step or 0

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, step)
        self._step = step

    def event(self, name: str, payload: Mapping[str, Any]) -> None:
        self._text(f"events/{name}", payload)

    def summary(self, values: Mapping[str, Any]) -> None:
        self._text("summary", values)

    def _text(self, tag: str, value: Mapping[str, Any]) -> None:
        text = json.dumps(plain(value), ensure_ascii=False, indent=2)
        self._writer.add_text(tag, f"```json\n{text}\n```", self._step)
        self._writer.flush()

    def close(self, failed: bool) -> None:
        self._writer.close()
