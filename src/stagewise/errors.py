"""The one error tree of stagewise.

Every error a user can cause carries a headline (what went wrong), a location (file and
line or key, when there is one) and a hint (how to fix it). The CLI prints these three
without a traceback and exits 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One finding about a file: used by errors that report several problems at once and
    by ``stagewise stage validate``."""

    message: str
    file: str | None = None
    line: int | None = None
    key: str | None = None
    hint: str | None = None
    severity: Severity = "error"

    @property
    def location(self) -> str | None:
        where = self.file or ""
        if self.file and self.line:
            where += f":{self.line}"
        if self.key:
            where = f"{where} ({self.key})" if where else self.key
        return where or None

    def render(self) -> str:
        text = f"{self.location}: {self.message}" if self.location else self.message
        if self.hint:
            text += f"\n    fix: {self.hint}"
        return text

    def to_dict(self) -> dict[str, object]:
        return {
            "severity": self.severity,
            "file": self.file,
            "line": self.line,
            "key": self.key,
            "message": self.message,
            "hint": self.hint,
        }


class StagewiseError(Exception):
    """Base of every error stagewise raises on purpose."""

    def __init__(
        self,
        headline: str,
        *,
        location: str | None = None,
        hint: str | None = None,
        problems: list[Problem] | tuple[Problem, ...] = (),
    ) -> None:
        self.headline = headline
        self.location = location
        self.hint = hint
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.location}: {self.headline}" if self.location else self.headline]
        lines += [f"  - {p.render()}".replace("\n", "\n  ") for p in self.problems]
        if self.hint:
            lines.append(f"  fix: {self.hint}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        return {
            "error": type(self).__name__,
            "headline": self.headline,
            "location": self.location,
            "hint": self.hint,
            "problems": [p.to_dict() for p in self.problems],
        }


class ConfigError(StagewiseError):
    """A configuration file or value is malformed or inconsistent."""


class ConditionSyntaxError(ConfigError):
    """A stage switch condition does not parse."""


class ReleaseSourceError(StagewiseError):
    """A release repo (local, remote or at a git ref) cannot be read."""


class StageError(StagewiseError):
    """A stage operation cannot be carried out."""


class StageNotFoundError(StageError):
    """A stage name is not defined in stage_config.yaml."""


class StageChangedError(StageError):
    """A conditional switch found that another process had switched first."""


class ReadOnlyReleaseError(StageError):
    """A write was asked of a release that is read-only (remote, or read at a git ref)."""


class StateLockTimeoutError(StageError):
    """The lock that guards a release's state files was not free in time."""


class DataError(StagewiseError):
    """Data that cannot be read, preprocessed or sampled: a bad row, a corrupt shard, a
    store from a newer format, a series too short for its windows."""


class SourceError(DataError):
    """A source (file, glob, URL or SQL query) that cannot be read, or a bad row in it."""


class StoreError(DataError):
    """A sample store that is missing, incomplete, corrupt or from a newer format."""


class PipelineError(StagewiseError):
    """A pipeline definition that cannot run, or a run that cannot be started or resumed."""


class RunNotFoundError(PipelineError):
    """No run (or task, or artifact) of that id is in the metadata database."""


class DatabaseError(StagewiseError):
    """The metadata database cannot be reached, or its schema is newer than this stagewise."""
