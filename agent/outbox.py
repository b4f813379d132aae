"""The durable, bounded outbox of reports waiting for the control plane.

Theory of operation. A report is queued with :meth:`Outbox.enqueue`, which
assigns the device's next ``seq`` inside the same SQLite transaction that
stores the report (and, when the updater calls it, the journal entry the
report announces; see :mod:`agent.statedb`). The counter lives in the
``meta`` table and only increases, so a ``seq`` is never handed out twice,
whatever restarts, drops or acknowledgements happened in between.

The link's sender drains the outbox in ``seq`` order with :meth:`peek` and
removes reports with :meth:`ack` only after the transport confirmed delivery
(MQTT PUBACK at QoS 1, HTTP 200). A crash between delivery and ``ack`` sends
the report again; the control plane ingests each ``(device, seq)`` once.

Bounds: at most ``max_reports`` reports are kept. When a new one would pass
the bound, the oldest *non-terminal* report (``notified``, ``downloading``...)
is dropped first, because the outcome of an update (``committed``,
``reverted``, ``failed``, ``rejected``) matters more than the steps towards
it; only when every queued report is terminal is the oldest terminal one
dropped. Every drop is counted (``dropped``), and the control plane sees the
gap in ``seq``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from agent.statedb import StateDB
from fleetcore.protocol import StatusReport, UpdateState

_TERMINAL = (
    UpdateState.COMMITTED,
    UpdateState.REVERTED,
    UpdateState.FAILED,
    UpdateState.REJECTED,
)


@dataclass(frozen=True)
class OutboxItem:
    seq: int
    channel: str
    body: bytes


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    dropped: int
    next_seq: int


class Outbox:
    """Reports of one device, in ``seq`` order, until the transport confirms them."""

    def __init__(self, db: StateDB, *, max_reports: int = 1000) -> None:
        if max_reports < 1:
            raise ValueError("max_reports must be at least 1")
        self.db = db
        self.max_reports = max_reports
        #: Set whenever a report is queued, so the sender wakes up at once.
        self.wakeup = threading.Event()

    def enqueue(self, report: StatusReport, conn: sqlite3.Connection | None = None) -> int:
        """Queue ``report`` with the next ``seq`` (its own ``seq`` is replaced); return it."""
        with contextlib.ExitStack() as stack:
            c = conn if conn is not None else stack.enter_context(self.db.transaction())
            seq = int(self.db.get("next_seq", c) or 1)
            self.db.put("next_seq", seq + 1, c)
            body = dataclasses.replace(report, seq=seq).encode()
            self._make_room(c)
            c.execute(
                "INSERT INTO outbox (seq, channel, terminal, body, queued_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (seq, "status", int(report.state in _TERMINAL), body, time.time()),
            )
        self.wakeup.set()
        return seq

    def _make_room(self, c: sqlite3.Connection) -> None:
        (depth,) = c.execute("SELECT COUNT(*) FROM outbox").fetchone()
        excess = depth - self.max_reports + 1
        if excess <= 0:
            return
        victims = [
            row[0]
            for row in c.execute(
                "SELECT seq FROM outbox ORDER BY terminal ASC, seq ASC LIMIT ?", (excess,)
            )
        ]
        c.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in victims])
        self.db.put("dropped", int(self.db.get("dropped", c) or 0) + len(victims), c)

    def peek(self, limit: int = 100) -> list[OutboxItem]:
        """The oldest ``limit`` queued reports, in ``seq`` order, without removing them."""
        with self.db.reading() as c:
            rows = c.execute(
                "SELECT seq, channel, body FROM outbox ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [OutboxItem(int(s), str(ch), bytes(b)) for s, ch, b in rows]

    def ack(self, seqs: Iterable[int]) -> None:
        """Remove delivered reports (unknown ``seq`` values are ignored)."""
        items = [(int(s),) for s in seqs]
        if not items:
            return
        with self.db.transaction("acknowledge reports") as c:
            c.executemany("DELETE FROM outbox WHERE seq = ?", items)

    def stats(self) -> OutboxStats:
        return read_stats(self.db)


def read_stats(db: StateDB) -> OutboxStats:
    with db.reading() as c:
        (depth,) = c.execute("SELECT COUNT(*) FROM outbox").fetchone()
        dropped = int(db.get("dropped", c) or 0)
        next_seq = int(db.get("next_seq", c) or 1)
    return OutboxStats(depth=int(depth), dropped=dropped, next_seq=next_seq)


__all__ = ["Outbox", "OutboxItem", "OutboxStats", "read_stats"]
