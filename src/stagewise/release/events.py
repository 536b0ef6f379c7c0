"""Reading ``stage_events.jsonl``: the stage_switch events, in the order they happened
(``data_loading`` events share the file and are passed over here).

A line that does not parse (cut short when a writer was killed, or edited by hand) is
skipped and reported with its line number; the other events are still returned.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from stagewise.config import StageSwitchEvent, load_model
from stagewise.config.loading import Document
from stagewise.errors import Problem, StagewiseError
from stagewise.release.repo import EVENT_LOG, Release

# Other events that share the log (seed 000's data-loading statistics): not switches.
OTHER_EVENTS = frozenset({"data_loading"})


@dataclass
class EventLog:
    events: list[StageSwitchEvent] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)


def read_events(release: Release) -> EventLog:
    raw = release.source.read_bytes(EVENT_LOG)
    log = EventLog()
    if raw is None:
        return log
    source = release.source.describe(EVENT_LOG)
    for number, line in enumerate(raw.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if isinstance(data, dict) and data.get("event") in OTHER_EVENTS:
                continue
            if not isinstance(data, dict) or data.get("event") != "stage_switch":
                raise ValueError("not a stage_switch event")
            log.events.append(load_model(StageSwitchEvent, Document(data, f"{source}:{number}")))
        except (ValueError, StagewiseError) as exc:
            reason = exc.headline if isinstance(exc, StagewiseError) else str(exc)
            log.skipped.append(
                Problem(f"line skipped: {reason}", file=source, line=number, severity="warning")
            )
    return log
