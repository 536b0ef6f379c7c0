"""The metadata database: where it is, how to connect, and keeping its schema current.

SQLite (``<home>/stagewise.db``) is the default; ``STAGEWISE_DB_URL`` names any SQLAlchemy
URL (``postgresql+psycopg://user@host/db``). SQLite runs in WAL mode with a busy timeout,
and every write transaction starts with ``BEGIN IMMEDIATE`` so that two processes never
both read and then fail to upgrade to a write lock. Opening a database brings its schema to
the newest Alembic revision under a lock, so two runners starting at once do not both
migrate.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stagewise.errors import DatabaseError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Connection, Engine

HEAD = "0001"  # the newest migration in store/migrations/versions (a test keeps them equal)
_MIGRATIONS = Path(__file__).with_name("migrations")
_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def home() -> Path:
    return Path(os.environ.get("STAGEWISE_HOME") or ".stagewise")


def database_url(url: str | None = None) -> str:
    """``url``, else ``STAGEWISE_DB_URL``, else SQLite in stagewise's home folder."""
    url = url or os.environ.get("STAGEWISE_DB_URL")
    if url:
        return url
    return f"sqlite:///{(home() / 'stagewise.db').resolve()}"


def display_url(url: str) -> str:
    """The URL without its password, for messages."""
    url = re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", url)


def engine(url: str | None = None) -> Engine:
    """The process's engine for ``url`` (created, connected and migrated on first use)."""
    url = database_url(url)
    with _engines_lock:
        found = _engines.get(url)
        if found is None or found.__dict__.get("_stagewise_pid") != os.getpid():
            found = _connect(url)
            found.__dict__["_stagewise_pid"] = os.getpid()
            _engines[url] = found
        return found


def dispose_all() -> None:
    """Close every pooled connection (tests, and before a process forks)."""
    with _engines_lock:
        for item in _engines.values():
            item.dispose()
        _engines.clear()


def _connect(url: str) -> Engine:
    from sqlalchemy import create_engine, event
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                try:
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise DatabaseError(
                        f"cannot make the database's folder: {exc.strerror or exc}",
                        location=display_url(url),
                        hint="point STAGEWISE_HOME or STAGEWISE_DB_URL at a folder you can write",
                    ) from None
            made = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})
            event.listen(made, "connect", _sqlite_setup)
            event.listen(made, "begin", _sqlite_begin)
        else:
            made = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise DatabaseError(
            f"not a database URL stagewise can use: {exc}",
            location=display_url(url),
            hint="use sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB "
            "(in STAGEWISE_DB_URL)",
        ) from None
    _migrate(made, url)
    return made


def _sqlite_setup(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # The driver's own transaction handling is off: the "begin" listener issues BEGIN
    # IMMEDIATE, which takes the write lock up front and so honours the busy timeout.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable through a process crash
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # A write transaction takes the write lock up front (BEGIN IMMEDIATE), so that it waits
    # on the busy timeout instead of failing when it upgrades; a read stays a plain BEGIN,
    # so readers never wait on writers (WAL).
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("stagewise_write") else "BEGIN")


@contextlib.contextmanager
def write(made: Engine) -> Iterator[Connection]:
    """A connection in a write transaction (committed at the end, rolled back on error)."""
    with made.connect() as conn:
        conn.info["stagewise_write"] = True
        try:
            with conn.begin():
                yield conn
        finally:
            conn.info.pop("stagewise_write", None)


def current_revision(made: Engine) -> str | None:
    from sqlalchemy import inspect, text

    with made.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _migrate(made: Engine, url: str) -> None:
    from sqlalchemy.exc import DatabaseError as SQLDatabaseError
    from sqlalchemy.exc import OperationalError

    try:
        revision = current_revision(made)
        if revision == HEAD:
            return
        if revision is not None and revision > HEAD:
            raise DatabaseError(
                f"the database's schema is {revision}, newer than this stagewise ({HEAD})",
                location=display_url(url),
                hint="upgrade stagewise (pip install -U stagewise) to use this database",
            )
        with _migration_lock(made, url):
            if current_revision(made) != HEAD:
                upgrade(made)
    except OperationalError as exc:
        raise DatabaseError(
            f"cannot reach the metadata database: {str(exc.orig).strip().splitlines()[0]}",
            location=display_url(url),
            hint="start the database or fix STAGEWISE_DB_URL; unset it to use SQLite in "
            "./.stagewise",
        ) from None
    except SQLDatabaseError as exc:
        raise DatabaseError(
            f"this is not a stagewise metadata database: {str(exc.orig).strip().splitlines()[0]}",
            location=display_url(url),
            hint="point STAGEWISE_DB_URL (or --home) at a new file or an empty database",
        ) from None


def upgrade(made: Engine, revision: str = "head") -> None:
    """Run Alembic's migrations up to ``revision`` on ``made``."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with write(made) as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


@contextlib.contextmanager
def _migration_lock(made: Engine, url: str):  # type: ignore[no-untyped-def]
    if made.dialect.name == "postgresql":
        from sqlalchemy import text

        with made.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(7424551)"))
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(7424551)"))
                conn.commit()
    elif made.dialect.name == "sqlite" and "///" in url and ":memory:" not in url:
        import filelock

        with filelock.FileLock(url.split("///", 1)[1] + ".migrate.lock", timeout=120):
            yield
    else:
        yield
