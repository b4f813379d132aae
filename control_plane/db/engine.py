"""Engines for the control plane's database: SQLite by default, PostgreSQL to scale out.

Theory of operation: :func:`make_engine` is the only place that knows how to
open a database; it runs nothing until called.

SQLite: the parent directory of the file is created; connections may move
between threads (``check_same_thread=False``) because the server hands them
out from a pool; each connection is switched to WAL (readers do not block the
writer), gets a busy timeout (a writer waits for the lock instead of failing at
once), and enforces foreign keys. The ``sqlite3`` driver's own transaction
handling is switched off and SQLAlchemy emits ``BEGIN`` itself, as the
SQLAlchemy documentation recommends: that makes SELECTs part of the
transaction and SAVEPOINTs work. A connection of :func:`for_writing` begins
with ``BEGIN IMMEDIATE``, taking the write lock up front, so a transaction that
reads and then writes waits for its turn (under the busy timeout) instead of
failing when another writer got there first. An in-memory database
(``sqlite://``) lives in one connection shared by every session, so it suits
single-threaded scripts only, never the server.

PostgreSQL: ``postgresql://`` URLs use psycopg 3, and pooled connections are
checked before use (``pool_pre_ping``) so a restarted server costs no failed
request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.pool import StaticPool

#: How long a SQLite writer waits for the database lock, milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 30_000

# Execution option read by the BEGIN hook; ignored by other databases.
_WRITE_INTENT = "edgefleet_write_intent"


def _is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def make_engine(url: str) -> Engine:
    """An engine for ``url``, configured for the control plane (see the module docstring)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "postgresql":
        return create_engine(parsed, pool_pre_ping=True)
    return create_engine(parsed)


def for_writing(engine: Engine) -> Engine:
    """The same engine (and pool) whose SQLite transactions take the write lock at BEGIN."""
    return engine.execution_options(**{_WRITE_INTENT: True})


def _sqlite_engine(url: URL) -> Engine:
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if _is_memory(url):
        # One shared connection, or every pooled connection would see its own empty database.
        kwargs["poolclass"] = StaticPool
    elif url.database and not url.database.startswith("file:"):
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (see _on_begin)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(_WRITE_INTENT, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "for_writing", "make_engine"]
