"""Batched inserts that skip duplicates: executemany on SQLite, COPY on PostgreSQL.

Theory of operation: a batch of windows is written with one round trip per
few hundred rows, and a row whose unique key is already stored is skipped,
not an error, so the count of rows written tells stored from duplicates.

* SQLite: ``INSERT ... ON CONFLICT (key) DO NOTHING`` run with the driver's
  ``executemany`` on the session's own connection (so inside its
  transaction), on tuples, and ``rowcount`` adds up the rows written. The
  values are bound as SQLAlchemy would bind them: an aware datetime of a
  :class:`~control_plane.db.tables.UtcDateTime` column becomes naive UTC text
  in SQLAlchemy's SQLite storage format (``YYYY-MM-DD HH:MM:SS.ffffff``), so
  rows written here and through the ORM compare and read back alike; a
  naive one is refused (:class:`~control_plane.errors.InvalidInputError`), as
  the column type refuses it. Every other column
  type here binds its Python value unchanged.
* PostgreSQL: the rows are streamed with binary ``COPY`` (psycopg 3's
  ``cursor.copy``, each value dumped for its column's type as the server
  describes the staging table) into a temporary staging table of the same columns
  (``ON COMMIT DELETE ROWS``, created on first use by each connection), then
  moved with one ``INSERT ... SELECT ... ON CONFLICT (key) DO NOTHING`` and
  the staging table is emptied. ``COPY`` alone would abort the whole batch
  at the first duplicate; staging keeps it idempotent. Everything runs in the
  caller's transaction, so a failure leaves nothing behind.

Errors: a value a column refuses (PostgreSQL ``DataError``, a NOT NULL
violation) raises :class:`~control_plane.errors.InvalidInputError`; the caller
may then retry row by row. Table and column names come from the table
metadata, never from input.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import psycopg
from sqlalchemy import Integer, Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from control_plane.db.tables import UtcDateTime
from control_plane.errors import InvalidInputError


def insert_new(
    session: Session,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    key: Sequence[str],
) -> int:
    """Insert ``rows`` (values in ``columns`` order), skipping stored keys; rows written."""
    if not rows:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        return _copy(session, table, columns, rows, key)
    times = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, UtcDateTime)]
    if times:
        cache: dict[datetime, str] = {}  # a batch shares its received_at, often its times
        rows = [_sqlite_times(row, times, cache) for row in rows]
    names = ", ".join(columns)
    marks = ", ".join("?" * len(columns))
    statement = (
        f"INSERT INTO {table.name} ({names}) VALUES ({marks}) "  # noqa: S608
        f"ON CONFLICT ({', '.join(key)}) DO NOTHING"
    )
    raw = session.connection().connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    cursor = raw.cursor()
    try:
        cursor.executemany(statement, rows)
    except OverflowError as exc:  # sqlite3 refuses integers beyond 64 bits before SQL sees them
        raise InvalidInputError(f"{table.name}: a value does not fit its column ({exc})") from exc
    except sqlite3.Error as exc:  # as SQLAlchemy wraps it (IntegrityError, OperationalError...)
        raise DBAPIError.instance(statement, None, exc, sqlite3.Error) from exc
    finally:
        stored = cursor.rowcount
        cursor.close()
    return int(stored)


def _sqlite_times(
    row: tuple[Any, ...], times: list[int], cache: dict[datetime, str]
) -> tuple[Any, ...]:
    values = list(row)
    for i in times:
        value = values[i]
        if value is None:
            continue
        text = cache.get(value)
        if text is None:
            if value.tzinfo is None or value.utcoffset() is None:
                raise InvalidInputError(
                    f"naive datetime {value.isoformat()}: times must be timezone-aware"
                )
            # SQLAlchemy's format, "%04d-%02d-%02d %02d:%02d:%02d.%06d" of naive UTC.
            naive = value.astimezone(timezone.utc).replace(tzinfo=None)
            text = cache[value] = naive.isoformat(" ", "microseconds")
        values[i] = text
    return tuple(values)


def _copy(
    session: Session,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    key: Sequence[str],
) -> int:
    stage = f"{table.name}_copy"
    names = ", ".join(columns)
    # Binary COPY writes an int into an integer column without a range check (it
    # keeps the low 32 bits): stage every integer as bigint, so the move into the
    # table casts it and the server refuses what does not fit, as for text.
    staged = ", ".join(
        f"CAST({c} AS BIGINT) AS {c}" if isinstance(table.c[c].type, Integer) else c
        for c in columns
    )
    raw = session.connection().connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    try:
        with raw.cursor() as cursor:
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS "  # noqa: S608
                f"AS SELECT {staged} FROM {table.name} WITH NO DATA"
            )
            cursor.execute(f"SELECT {names} FROM {stage} LIMIT 0")  # noqa: S608
            oids = [column.type_code for column in cursor.description or ()]
            with cursor.copy(f"COPY {stage} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(oids)
                for row in rows:
                    copy.write_row(row)
            cursor.execute(
                f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {stage} "  # noqa: S608
                f"ON CONFLICT ({', '.join(key)}) DO NOTHING"
            )
            stored = cursor.rowcount
            # Emptied at commit anyway; now too, for a second batch in this transaction.
            cursor.execute(f"DELETE FROM {stage}")  # noqa: S608
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError, OverflowError) as exc:
        detail = " ".join(str(exc).split())[:300]
        message = f"{table.name}: a value does not fit its column ({detail})"
        raise InvalidInputError(message) from exc
    return int(stored)


__all__ = ["insert_new"]
