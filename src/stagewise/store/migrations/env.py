"""Alembic's environment: stagewise runs migrations itself (``store.db.migrate``), handing
over its own connection, so this file never builds an engine from a config file."""

from __future__ import annotations

from alembic import context

from stagewise.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
)
with context.begin_transaction():
    context.run_migrations()
