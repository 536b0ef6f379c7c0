"""Chat records: read, checked, converted, subsampled.

A record is seed 001's ``{"messages": [{"role", "content"}, ...], "dataset", "id"}``; an
OpenHermes-style ``{"conversations": [{"from": "human"|"gpt"|"system", "value"}]}`` is
converted on reading (human -> user, gpt -> assistant). A record without ``dataset`` takes
its file's name; one without ``id`` gets ``<dataset>_<line>``. ``is_target_task: true``
marks a record of the target task (the balanced quality loss).

Every record must have an assistant turn with text: the warmup learns from answers and the
finetune trains on them. Problems are reported with their file and line, all at once.
"""

from __future__ import annotations

import glob
import json
import math
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stagewise.errors import DataError, Problem

ROLES = ("system", "user", "assistant")
_OPENHERMES_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user"}
_MAX_PROBLEMS = 20
_NAME = re.compile(r"[\w\-][\w.\-]*")


@dataclass(frozen=True)
class ChatRecord:
    dataset: str
    id: str
    messages: tuple[dict[str, str], ...]
    is_target_task: bool = False
    source: str = ""  # file:line, for errors about this record
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def length(self) -> int:
        """Characters of role + content: the seed's sort_by_length key."""
        return sum(len(m["role"]) + len(m["content"]) for m in self.messages)

    def to_json(self) -> dict[str, Any]:
        return {"messages": list(self.messages), "dataset": self.dataset, "id": self.id}


def expand(patterns: Sequence[str], what: str = "dataset.data_path") -> list[Path]:
    """Files named by paths and globs, each once, in the order given."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches or not all(Path(m).is_file() for m in matches):
            missing = pattern if not matches else next(m for m in matches if not Path(m).is_file())
            raise DataError(
                f"no such data file: {missing}",
                location=what,
                hint="write the JSONL file first, or fix the path (relative paths start at "
                "the folder you run from)",
            )
        found += [Path(m) for m in matches if Path(m) not in found]
    return found


def read_records(
    patterns: Sequence[str], *, target: bool = False, what: str = "dataset.data_path"
) -> list[ChatRecord]:
    """Every record of the files, checked; ``target`` marks them all is_target_task."""
    records: list[ChatRecord] = []
    problems: list[Problem] = []
    for path in expand(patterns, what):
        records += _read_file(path, target, problems)
    if problems:
        shown = problems[:_MAX_PROBLEMS]
        more = f" (the first {_MAX_PROBLEMS} shown)" if len(problems) > _MAX_PROBLEMS else ""
        raise DataError(
            f"{len(problems)} bad chat record(s){more}",
            problems=shown,
            hint="each record needs 'messages' (role and content, with an assistant turn) "
            "or OpenHermes 'conversations'; fix or drop the lines named",
        )
    seen: dict[tuple[str, str], str] = {}
    for record in records:
        key = (record.dataset, record.id)
        if key in seen:
            raise DataError(
                f"record id {record.id!r} of dataset {record.dataset!r} appears twice",
                location=record.source,
                hint=f"ids must be unique within a dataset; the first is at {seen[key]}",
            )
        seen[key] = record.source
    return records


def _read_file(path: Path, target: bool, problems: list[Problem]) -> list[ChatRecord]:
    records: list[ChatRecord] = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                records.append(_record(raw, path, number, target))
            except json.JSONDecodeError as exc:
                problems.append(Problem(f"not JSON: {exc.msg}", file=str(path), line=number))
            except ValueError as exc:
                problems.append(Problem(str(exc), file=str(path), line=number))
            if len(problems) > _MAX_PROBLEMS:
                return records
    if not records and not problems:
        problems.append(
            Problem("the file holds no records", file=str(path), hint="remove it from the list")
        )
    return records


def _record(raw: Any, path: Path, number: int, target: bool) -> ChatRecord:
    if not isinstance(raw, dict):
        raise ValueError(f"a record is a JSON object; found {type(raw).__name__}")
    if "messages" in raw:
        messages = _messages(raw["messages"])
    elif "conversations" in raw:
        messages = _conversations(raw["conversations"])
    else:
        raise ValueError("no 'messages' (or OpenHermes 'conversations') in the record")
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        raise ValueError("the messages have no assistant turn with text")
    dataset = raw.get("dataset", path.stem.removesuffix(".jsonl"))
    if not isinstance(dataset, str) or not _NAME.fullmatch(dataset):
        # The name becomes a file name (router_data/<dataset>_router_data.pt).
        if "dataset" not in raw:
            raise ValueError(
                f"the record has no 'dataset' and its file's name {dataset!r} is none: a "
                "name is letters, digits, '.', '_' or '-' (rename the file, or set 'dataset')"
            )
        raise ValueError(
            f"'dataset' must be a name of letters, digits, '.', '_' or '-' (not starting "
            f"with '.'); found {dataset!r}"
        )
    record_id = raw.get("id", f"{dataset}_{number}")
    if not isinstance(record_id, str | int) or isinstance(record_id, bool):
        raise ValueError(f"'id' must be text or a whole number; found {record_id!r}")
    extra = {k: v for k, v in raw.items() if k not in ("messages", "dataset", "id")}
    return ChatRecord(
        dataset=dataset,
        id=str(record_id),
        messages=tuple(messages),
        is_target_task=target or raw.get("is_target_task") is True,
        source=f"{path}:{number}",
        extra=extra,
    )


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ValueError("'messages' must be a non-empty list")
    result = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise ValueError(f"messages[{i}] is not an object")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role is {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content must be text")
        result.append({"role": role, "content": content})
    return result


def _conversations(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ValueError("'conversations' must be a non-empty list")
    result = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise ValueError(f"conversations[{i}] is not an object")
        speaker, text = turn.get("from"), turn.get("value")
        if speaker not in _OPENHERMES_ROLES:
            raise ValueError(
                f"conversations[{i}].from is {speaker!r}; expected human, gpt or system"
            )
        if not isinstance(text, str):
            raise ValueError(f"conversations[{i}].value must be text")
        result.append({"role": _OPENHERMES_ROLES[speaker], "content": text})
    return result


def convert_openhermes(line: dict[str, Any]) -> dict[str, Any]:
    """An OpenHermes-2.5 record as seed 001's ``messages`` record."""
    converted = dict(line)
    converted["messages"] = _conversations(converted.pop("conversations", None))
    return converted


def subset(records: Iterable[ChatRecord], ratio: float, seed: int) -> list[ChatRecord]:
    """A seeded ``ratio`` of each dataset (at least one record each); target-task records
    are always kept whole. The file order is kept."""
    records = list(records)
    if ratio >= 1:
        return records
    by_dataset: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        if not record.is_target_task:
            by_dataset.setdefault(record.dataset, []).append(i)
    kept = {i for i, r in enumerate(records) if r.is_target_task}
    for name, indices in sorted(by_dataset.items()):
        rng = random.Random(f"{seed}:{name}")
        kept |= set(rng.sample(indices, max(1, math.ceil(round(len(indices) * ratio, 9)))))
    return [r for i, r in enumerate(records) if i in kept]


def require_records(records: Sequence[ChatRecord], what: str) -> None:
    if not records:
        raise DataError(
            f"no records to {what}",
            location="dataset.data_path",
            hint="list JSONL files that hold chat records",
        )
