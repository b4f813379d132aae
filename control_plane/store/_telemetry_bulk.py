"""Batched inserts that skip duplicates: executemany on SQLite, COPY on PostgreSQL.

Theory of operation: a batch of windows is written with one round trip per
few hundred rows, and a row whose unique key is already stored is skipped,
not an error, so the count of rows written tells stored from duplicates.

* SQLite: ``INSERT ... ON CONFLICT (key) DO NOTHING`` run with ``executemany``;
  the statement is compiled once per batch and ``rowcount`` adds up the rows
  written.
* PostgreSQL: the rows are streamed with ``COPY`` (psycopg 3's
  ``cursor.copy``) into a temporary staging table of the same columns
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

from collections.abc import Sequence
from typing import Any, cast

import psycopg
from sqlalchemy import Table
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

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
    statement = sqlite_insert(table).on_conflict_do_nothing(index_elements=list(key))
    params = [dict(zip(columns, row, strict=True)) for row in rows]
    try:
        result = cast("CursorResult[Any]", session.execute(statement, params))
    except OverflowError as exc:  # sqlite3 refuses integers beyond 64 bits before SQL sees them
        raise InvalidInputError(f"{table.name}: a value does not fit its column ({exc})") from exc
    return int(result.rowcount)


def _copy(
    session: Session,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    key: Sequence[str],
) -> int:
    stage = f"{table.name}_stage"
    names = ", ".join(columns)
    raw = session.connection().connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    try:
        with raw.cursor() as cursor:
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS "  # noqa: S608
                f"AS SELECT {names} FROM {table.name} WITH NO DATA"
            )
            with cursor.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(
                f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {stage} "  # noqa: S608
                f"ON CONFLICT ({', '.join(key)}) DO NOTHING"
            )
            stored = cursor.rowcount
            # Emptied at commit anyway; now too, for a second batch in this transaction.
            cursor.execute(f"DELETE FROM {stage}")  # noqa: S608
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
        detail = " ".join(str(exc).split())[:300]
        message = f"{table.name}: a value does not fit its column ({detail})"
        raise InvalidInputError(message) from exc
    return int(stored)


__all__ = ["insert_new"]
