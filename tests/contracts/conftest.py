"""The metadata-database backends every contract test runs on: SQLite and PostgreSQL.

PostgreSQL is the server in ``STAGEWISE_TEST_POSTGRES_URL`` (``make test`` sets it). Each
test gets a schema of its own (``sw_<random>``) and a URL whose connections put that schema
first on their ``search_path``, so tests sharing the server never see each other's tables;
the schema is dropped afterwards. With the variable unset the PostgreSQL cases skip; with
it set and the server unreachable they fail, saying so.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from stagewise.store import db

POSTGRES_ENV = "STAGEWISE_TEST_POSTGRES_URL"


def postgres_server() -> str:
    """The test server's URL; skips without one, fails when it cannot be reached."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    probe = sa.create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 5})
    try:
        with probe.connect():
            pass
    except sa.exc.OperationalError as exc:
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        pytest.fail(
            f"PostgreSQL at {POSTGRES_ENV}={db.display_url(url)} is unreachable: {first}\n"
            f"start it (make services) or unset {POSTGRES_ENV} to skip the PostgreSQL cases",
            pytrace=False,
        )
    finally:
        probe.dispose()
    return url


def with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` first (libpq's ``options`` parameter)."""
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options={quote(f'-csearch_path={schema}', safe='')}"


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL into a new, empty schema of the test server; the schema is dropped after."""
    server = postgres_server()
    schema = f"sw_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, poolclass=NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = with_search_path(server, schema)
    try:
        yield url
    finally:
        # Pooled connections of this process hold locks on the schema's tables.
        db.dispose_all()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@contextlib.contextmanager
def backend_url(backend: str, folder: Path) -> Iterator[str]:
    """A fresh, empty metadata database of ``backend`` ("sqlite" or "postgresql")."""
    if backend == "sqlite":
        try:
            yield f"sqlite:///{folder / 'stagewise.db'}"
        finally:
            db.dispose_all()
        return
    with postgres_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty metadata database on each backend (not migrated yet: the first
    ``store.db.engine(url)`` or ``RunStore(url)`` does that)."""
    with backend_url(request.param, tmp_path) as url:
        yield url
