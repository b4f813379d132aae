"""The agent's durable state: one SQLite database for the journal and the outboxes.

Theory of operation. ``data_dir/state/agent.db`` holds three tables: ``meta``
(key → JSON: the update journal with the trust state, the report sequence
counters, the drop counters, the link status), ``outbox`` (status reports
waiting for the transport) and ``channel_outbox`` (drift summaries, telemetry
and input captures waiting for it; see :mod:`agent._channel_outbox`). The
third table was added without a schema version change: ``CREATE TABLE IF NOT
EXISTS`` adds it to an older database, and an older agent ignores it.
Keeping the journal and the status outbox in one database lets the updater
move to a new state, remember the trust decision that allowed it, and queue
the status report announcing it in *one* transaction: after ``kill -9`` or a power cut
either all three happened or none did, so a report is never lost or sent for a
state the device never reached, and an accepted assignment sequence is never
recorded without the update it started.

Settings, and why:

* ``journal_mode=WAL``: ``fleet-agent status`` and the transport's sender read
  while the updater writes, without blocking it.
* ``synchronous=FULL``: every commit is on disk before it returns. With
  NORMAL a power cut may roll back the last commits; that is harmless for the
  journal (every state's action is idempotent and is simply redone), but it
  could hand out a report ``seq`` again after it was already sent, and the
  control plane would drop the new report as a duplicate. Reports are a
  handful per update, so the extra fsync per commit costs nothing noticeable.
* one connection guarded by a lock, used by the updater and the link threads;
  transactions are ``BEGIN IMMEDIATE`` so a writer never fails half-way on a
  lock upgrade.

Errors: SQLITE_FULL and disk errnos become :class:`~agent.errors.DiskFullError`,
anything else :class:`~agent.errors.StateError`.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.errors import DiskFullError, StateError, is_disk_full

DB_FILE = Path("state") / "agent.db"
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    terminal INTEGER NOT NULL,
    body BLOB NOT NULL,
    queued_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS channel_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body BLOB NOT NULL,
    meta TEXT NOT NULL,
    queued_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS channel_outbox_order ON channel_outbox (channel, id);
"""


def _convert(exc: BaseException, what: str) -> Exception:
    if is_disk_full(exc) or (
        isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()
    ):
        return DiskFullError(f"no space left to {what}")
    return StateError(f"state database error while trying to {what}: {exc}")


class StateDB:
    """The SQLite state database of one data directory."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self._lock = threading.RLock()
        try:
            if readonly:
                uri = f"file:{path}?mode=ro"
                self._conn = sqlite3.connect(
                    uri, uri=True, isolation_level=None, check_same_thread=False, timeout=5
                )
            else:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._conn = sqlite3.connect(
                    path, isolation_level=None, check_same_thread=False, timeout=30
                )
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.executescript(_SCHEMA)
                self._check_schema()
        except (sqlite3.Error, OSError) as exc:
            raise _convert(exc, f"open {path}") from exc

    @classmethod
    def open(cls, data_dir: Path) -> StateDB:
        return cls(data_dir / DB_FILE)

    def _check_schema(self) -> None:
        with self.transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StateError(
                    f"{self.path} has schema {row[0]}, this agent understands {SCHEMA_VERSION}"
                )

    @contextlib.contextmanager
    def transaction(self, what: str = "update the agent state") -> Iterator[sqlite3.Connection]:
        """One atomic, durable write transaction (re-entrant: nested calls join it)."""
        with self._lock:
            if self._conn.in_transaction:
                yield self._conn
                return
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _convert(exc, what) from exc
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise _convert(exc, what) from exc

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise _convert(exc, "read the agent state") from exc

    def get(self, key: str, conn: sqlite3.Connection | None = None) -> Any:
        """The JSON value stored under ``key``, or None."""
        with contextlib.ExitStack() as stack:
            c = conn if conn is not None else stack.enter_context(self.reading())
            row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return json.loads(row[0])
        except ValueError as exc:
            raise StateError(f"state entry {key!r} is corrupt") from exc

    def put(self, key: str, value: Any, conn: sqlite3.Connection | None = None) -> None:
        body = json.dumps(value, sort_keys=True)
        with contextlib.ExitStack() as stack:
            c = conn if conn is not None else stack.enter_context(self.transaction())
            try:
                c.execute(
                    "INSERT INTO meta VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, body),
                )
            except sqlite3.Error as exc:
                raise _convert(exc, f"store {key}") from exc

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()


__all__ = ["DB_FILE", "SCHEMA_VERSION", "StateDB"]
