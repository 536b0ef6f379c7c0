"""Reading SQL through SQLAlchemy: :class:`SqlSource` runs a query (as written) or reads a
table (in primary-key order) in chunks of ``chunk_rows`` rows over a server-side cursor;
our stand-in for seed 003's ODPS tables. Anything wrong with a SQL source raises."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from stagewise.data.sources.base import (
    _CONVERSION_ERRORS,
    OnError,
    ReadReport,
    Source,
    _check_columns,
    _digest,
    _empty,
    _project,
    _reason,
)
from stagewise.errors import SourceError

SQL_DIALECTS = {"sqlite", "postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle"}


class SqlSource(Source):
    """A query or table read through SQLAlchemy in chunks (see :func:`open_source`)."""

    def __init__(self, url: str, *, query: str | None, table: str | None) -> None:
        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool

        self.url = _hide_password(url)
        if (query is None) == (table is None):
            raise SourceError(
                "a database source needs exactly one of query= and table=",
                location=self.url,
                hint="pass table='name' to read a table, or query='SELECT ...'",
            )
        if table is not None and not all(part.isidentifier() for part in table.split(".", 1)):
            raise SourceError(
                f"{table!r} is not a table name",
                location=self.url,
                hint="give a plain identifier, or schema.table; for anything else use query=",
            )
        self.query = query.strip().rstrip(";").strip() if query is not None else None
        self.table = table
        self.on_error: OnError = "raise"
        self.description = f"{self.url} ({f'table {table}' if table else 'query'})"
        self.report = ReadReport()
        try:
            # NullPool: each read opens and closes its own connection, leaving no handles.
            self._engine = sa.create_engine(url, poolclass=NullPool)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise SourceError(
                f"cannot use this database URL: {_reason(exc)}",
                location=self.url,
                hint="a SQLAlchemy URL such as sqlite:///data.db or "
                "postgresql+psycopg://user@host/db, with its driver installed",
            ) from None
        database = self._engine.url.database
        if (
            self._engine.url.get_backend_name() == "sqlite"
            and database not in (None, "", ":memory:")
            and not database.startswith("file:")
            and not os.path.exists(database)
        ):
            # Connecting would create an empty database file and report a missing table.
            raise SourceError(
                "no such SQLite database file",
                location=self.url,
                hint="check the path: sqlite:///relative/path.db or sqlite:////absolute/path.db",
            )

    def fingerprint(self) -> str:
        import sqlalchemy as sa

        with self._connection() as conn:
            statement, _ = self._statement(conn, None)
            count = sa.select(sa.func.count()).select_from(statement.subquery("counted"))
            rows = conn.execute(count).scalar_one()
        what = self.query if self.query is not None else f"table {self.table}"
        return _digest({"url": self.url, "what": what, "rows": rows})

    def _read(self, chunk_rows: int, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        with self._connection() as conn:
            statement, types = self._statement(conn, columns)
            conn.execution_options(stream_results=True, yield_per=chunk_rows)
            # Closed explicitly: a server-side cursor left open warns when collected.
            with contextlib.closing(conn.execute(statement)) as result:
                yield from self._result_batches(result, types, chunk_rows, columns)

    def _result_batches(
        self, result: Any, types: list | None, chunk_rows: int, columns: list[str] | None
    ) -> Iterator[pa.RecordBatch]:
        names = list(result.keys())
        if columns is not None and self.query is not None:
            _check_columns(pa.schema([(n, pa.null()) for n in names]), columns, self.url)
        types = types or [None] * len(names)
        first_row = 1
        for rows in result.partitions(chunk_rows):
            batch = self._to_batch(rows, names, types, first_row)
            types = batch.schema.types
            first_row += len(rows)
            yield _project(batch, columns, self.description)
        if first_row == 1:
            schema = pa.schema([(n, t or pa.null()) for n, t in zip(names, types, strict=True)])
            yield _project(_empty(schema), columns, self.description)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        import sqlalchemy as sa

        try:
            with self._engine.connect() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(exc) from None

    def _error(self, exc: Exception) -> SourceError:
        what = f"table {self.table!r}" if self.table else f"query {_shorten(self.query or '')!r}"
        return SourceError(
            f"cannot read {what}: {_reason(getattr(exc, 'orig', None) or exc)}",
            location=self.url,
            hint="check the URL, that the server is up, and the table name or query",
        )

    def _statement(self, conn: Any, columns: list[str] | None) -> tuple[Any, list | None]:
        """The SELECT to run, and the Arrow types the database declares (None: infer)."""
        import sqlalchemy as sa

        if self.query is not None:
            # Escaped colons: the user's SQL runs as written, with no ':name' bind parameters.
            return sa.text(self.query.replace(":", "\\:")).columns(), None
        schema, name = self.table.split(".", 1) if "." in self.table else (None, self.table)
        try:
            table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=conn)
        except sa.exc.NoSuchTableError:
            known = sa.inspect(conn).get_table_names(schema=schema)
            raise SourceError(
                f"no table {self.table!r} in this database",
                location=self.url,
                hint=f"tables there: {', '.join(known[:10]) or 'none'}",
            ) from None
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(exc) from None
        if columns is not None:
            _check_columns(
                pa.schema([(c.name, pa.null()) for c in table.columns]), columns, self.url
            )
        chosen = [table.c[c] for c in columns] if columns is not None else list(table.columns)
        statement = sa.select(*chosen).order_by(*table.primary_key.columns)
        return statement, [_arrow_type(column.type) for column in chosen]

    def _to_batch(
        self, rows: Sequence[Any], names: list[str], types: list[Any], first_row: int
    ) -> pa.RecordBatch:
        arrays = []
        for index, (name, kind) in enumerate(zip(names, types, strict=True)):
            try:
                arrays.append(pa.array([row[index] for row in rows], type=kind))
            except _CONVERSION_ERRORS as exc:
                last = first_row + len(rows) - 1
                raise SourceError(
                    f"column {name!r}, rows {first_row:,}-{last:,}: {_reason(exc)}",
                    location=self.description,
                    hint="give the column one type (CAST it in a query); a query's types come "
                    "from its first chunk, so a column that is all NULL there has no type",
                ) from None
        return pa.RecordBatch.from_arrays(arrays, names=names)


def _is_database_url(text: str) -> bool:
    scheme = text.split("://", 1)[0] if "://" in text else ""
    return scheme.split("+", 1)[0].lower() in SQL_DIALECTS


def _arrow_type(sql_type: Any) -> pa.DataType | None:
    """The Arrow type for a declared SQL column type, or None to infer it from the values."""
    import sqlalchemy as sa

    if isinstance(sql_type, sa.Boolean):
        return pa.bool_()
    if isinstance(sql_type, sa.Integer):
        return pa.int64()
    if isinstance(sql_type, sa.Float):
        return pa.float64()
    if isinstance(sql_type, sa.String):
        return pa.string()
    if isinstance(sql_type, sa.LargeBinary):
        return pa.binary()
    if isinstance(sql_type, sa.DateTime):
        return pa.timestamp("us", tz="UTC" if sql_type.timezone else None)
    if isinstance(sql_type, sa.Date):
        return pa.date32()
    return None


def _shorten(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _hide_password(url: str) -> str:
    return re.sub(r"^([^:/]+://[^:/@]*:)[^@]*@", r"\1***@", url)
