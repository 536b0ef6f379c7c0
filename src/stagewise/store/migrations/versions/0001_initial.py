"""The first schema: runs, tasks, attempts, artifacts, bindings, events, runners.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("pipeline_version", sa.String(100)),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("overrides", sa.JSON, nullable=False),
        sa.Column("executor", sa.String(20), nullable=False),
        sa.Column("output_dir", sa.Text, nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_runs_pipeline", "runs", ["pipeline"])
    op.create_table(
        "tasks",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("runner_id", sa.String(64)),
        sa.Column("not_before", sa.Float),
        sa.Column("cache_key", sa.String(64)),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("error", sa.Text),
        sa.Column("result", sa.JSON),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
    )
    op.create_index("ix_tasks_cache_key", "tasks", ["cache_key"])
    op.create_table(
        "attempts",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("task", sa.String(200), primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("runner_id", sa.String(64), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("error", sa.Text),
        sa.Column("log", sa.Text),
        sa.ForeignKeyConstraint(
            ["run_id", "task"], ["tasks.run_id", "tasks.name"], ondelete="CASCADE"
        ),
    )
    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(64)),
        sa.Column("task", sa.String(200)),
        sa.Column("name", sa.String(200)),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_artifacts_run_id", "artifacts", ["run_id"])
    op.create_index("ix_artifacts_uri", "artifacts", ["uri", "fingerprint"])
    op.create_table(
        "bindings",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("task", sa.String(200), primary_key=True),
        sa.Column("direction", sa.String(3), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("artifact_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_bindings_artifact_id", "bindings", ["artifact_id"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("task", sa.String(200)),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("data", sa.JSON),
    )
    op.create_index("ix_events_run_id", "events", ["run_id"])
    op.create_table(
        "runners",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
    )
    op.create_index("ix_runners_run_id", "runners", ["run_id"])


def downgrade() -> None:
    for table in ("runners", "events", "bindings", "artifacts", "attempts", "tasks", "runs"):
        op.drop_table(table)
