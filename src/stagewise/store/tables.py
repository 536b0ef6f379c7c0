"""The metadata database's tables (SQLAlchemy Core). Changes go through an Alembic migration
in ``store/migrations/versions``; a test checks that the migrations build exactly these."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# Times are Unix seconds (float): the same on every backend, and cheap to write.

runs = Table(
    "runs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("pipeline", String(200), nullable=False, index=True),
    Column("pipeline_version", String(100)),
    Column("state", String(20), nullable=False),  # running, succeeded, failed, cancelled
    Column("spec", JSON, nullable=False),  # the pipeline as planned (parameters resolved)
    Column("source", Text),  # the pipeline file, if there was one
    Column("overrides", JSON, nullable=False),
    Column("executor", String(20), nullable=False),
    Column("output_dir", Text, nullable=False),
    Column("options", JSON, nullable=False),  # no_cache, fit_resources, mounts, ...
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("error", Text),
)

tasks = Table(
    "tasks",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("position", Integer, nullable=False),
    # pending, running, retrying, succeeded, cached, failed, skipped, cancelled
    Column("state", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),  # the last attempt's number
    Column("failures", Integer, nullable=False, default=0),  # attempts that used up a retry
    Column("runner_id", String(64)),  # the runner that claimed the task
    Column("not_before", Float),  # a retry waits until then
    Column("cache_key", String(64)),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("error", Text),
    Column("result", JSON),
    ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
    Index("ix_tasks_cache_key", "cache_key"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("task", String(200), primary_key=True),
    Column("number", Integer, primary_key=True),
    # running, succeeded, failed, timed_out, interrupted, cancelled
    Column("state", String(20), nullable=False),
    Column("runner_id", String(64), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("error", Text),
    Column("log", Text),  # where the attempt's stdout and stderr went
    ForeignKeyConstraint(["run_id", "task"], ["tasks.run_id", "tasks.name"], ondelete="CASCADE"),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("run_id", String(64), index=True),  # null for a file that came from outside
    Column("task", String(200)),
    Column("name", String(200)),
    Column("kind", String(20), nullable=False),  # output, external, model
    Column("uri", Text, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("size", Integer),
    Column("created_at", Float, nullable=False),
    Index("ix_artifacts_uri", "uri", "fingerprint"),
)

# Which artifacts a task of a run read (direction "in") and wrote or reused ("out").
bindings = Table(
    "bindings",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("task", String(200), primary_key=True),
    Column("direction", String(3), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("artifact_id", String(64), nullable=False, index=True),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False, index=True),
    Column("task", String(200)),
    Column("time", Float, nullable=False),
    Column("event", String(40), nullable=False),
    Column("data", JSON),
)

runners = Table(
    "runners",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("run_id", String(64), nullable=False, index=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
)
