"""The metadata database: migrations build exactly store/tables.py, HEAD is Alembic's head,
a second open does not migrate again, and every way of not getting a database is a clear
DatabaseError (password masked)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from stagewise.errors import DatabaseError
from stagewise.store import db
from stagewise.store.tables import metadata

MIGRATIONS = Path(db.__file__).with_name("migrations")


def expected_schema() -> dict[str, Any]:
    """{table: {"columns": [...], "primary_key": [...], "indexes": {...}}} of tables.py."""
    return {
        table.name: {
            "columns": [c.name for c in table.columns],
            "primary_key": [c.name for c in table.primary_key.columns],
            "indexes": {tuple(c.name for c in index.columns) for index in table.indexes},
            "foreign_keys": {
                (tuple(fk.column_keys), fk.referred_table.name)
                for fk in table.foreign_key_constraints
            },
        }
        for table in metadata.sorted_tables
    }


def actual_schema(engine: sa.Engine) -> dict[str, Any]:
    """The same, read from a migrated database (Alembic's own table left out)."""
    with engine.connect() as conn:
        found = sa.inspect(conn)
        return {
            name: {
                "columns": [c["name"] for c in found.get_columns(name)],
                "primary_key": found.get_pk_constraint(name)["constrained_columns"],
                "indexes": {tuple(i["column_names"]) for i in found.get_indexes(name)},
                "foreign_keys": {
                    (tuple(fk["constrained_columns"]), fk["referred_table"])
                    for fk in found.get_foreign_keys(name)
                },
            }
            for name in found.get_table_names()
            if name != "alembic_version"
        }


def versions(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'meta' / 'stagewise.db'}"
    yield url
    db.dispose_all()


def test_migrations_build_exactly_the_tables_of_tables_py(sqlite_url: str) -> None:
    engine = db.engine(sqlite_url)

    assert actual_schema(engine) == expected_schema()
    assert versions(engine) == [db.HEAD]


def test_head_is_alembics_head_revision() -> None:
    scripts = ScriptDirectory(str(MIGRATIONS))

    assert scripts.get_heads() == [db.HEAD]  # one head: no unmerged branches
    assert scripts.get_current_head() == db.HEAD


def test_opening_again_does_not_migrate_again(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db.engine(sqlite_url)
    db.dispose_all()  # a new process would start from nothing but the file

    def no_upgrade(*_: Any, **__: Any) -> None:
        raise AssertionError("the second open ran the migrations again")

    monkeypatch.setattr(db, "upgrade", no_upgrade)
    start = time.perf_counter()
    engine = db.engine(sqlite_url)
    seconds = time.perf_counter() - start

    assert versions(engine) == [db.HEAD]
    assert seconds < 0.5, f"opening a migrated database took {seconds:.3f} s"
    assert db.engine(sqlite_url) is engine  # cached for the process


def test_the_default_database_is_sqlite_in_stagewise_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STAGEWISE_DB_URL", raising=False)
    monkeypatch.setenv("STAGEWISE_HOME", str(tmp_path / "home"))

    assert db.database_url() == f"sqlite:///{tmp_path / 'home' / 'stagewise.db'}"
    monkeypatch.setenv("STAGEWISE_DB_URL", "sqlite:///elsewhere.db")
    assert db.database_url() == "sqlite:///elsewhere.db"
    assert db.database_url("sqlite:///given.db") == "sqlite:///given.db"


def test_an_unreachable_postgresql_gives_a_database_error_without_the_password() -> None:
    url = "postgresql+psycopg://someone:s3cret@127.0.0.1:1/nowhere"

    with pytest.raises(DatabaseError) as caught:
        db.engine(url)

    message = str(caught.value)
    assert "s3cret" not in message
    assert "someone:***@127.0.0.1:1/nowhere" in message
    assert "cannot reach the metadata database" in message
    assert "STAGEWISE_DB_URL" in message  # the hint says what to fix


def test_a_password_in_the_query_string_is_masked_too() -> None:
    url = "postgresql+psycopg://someone@127.0.0.1:1/nowhere?password=s3cret"

    with pytest.raises(DatabaseError) as caught:
        db.engine(url)

    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["not a url", "foo://bar", "postgresql+nosuchdriver://someone@127.0.0.1/x"]
)
def test_a_bad_url_gives_a_database_error(url: str) -> None:
    with pytest.raises(DatabaseError, match="not a database URL stagewise can use") as caught:
        db.engine(url)

    assert "sqlite:///PATH" in str(caught.value)  # the hint shows what a URL looks like


def test_a_sqlite_file_that_cannot_be_opened_gives_a_database_error(tmp_path: Path) -> None:
    folder = tmp_path / "a-folder.db"
    folder.mkdir()

    with pytest.raises(DatabaseError, match="cannot reach the metadata database"):
        db.engine(f"sqlite:///{folder}")


def test_a_sqlite_path_under_a_file_gives_a_database_error(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("not a folder")

    with pytest.raises(DatabaseError):
        db.engine(f"sqlite:///{tmp_path / 'plain-file' / 'sub' / 'stagewise.db'}")


def test_a_database_from_a_newer_stagewise_is_refused(sqlite_url: str) -> None:
    engine = db.engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    db.dispose_all()

    with pytest.raises(DatabaseError) as caught:
        db.engine(sqlite_url)

    message = str(caught.value)
    assert "9999" in message
    assert f"newer than this stagewise ({db.HEAD})" in message
    assert "upgrade stagewise" in message
    # Refused, not downgraded or re-migrated.
    assert versions(sa.create_engine(sqlite_url, poolclass=sa.pool.NullPool)) == ["9999"]
