"""The durable, bounded queues of drift summaries, telemetry and input captures.

Theory of operation. One SQLite table (``channel_outbox`` in
:mod:`agent.statedb`) holds the payloads of every channel, each row tagged
with its channel, its per-channel ``seq`` and optional string metadata (the
query parameters of a capture upload). :meth:`ChannelOutbox.enqueue` takes a
*builder*, ``build(seq) -> bytes``, and calls it inside the transaction that
advances the channel's counter and stores the row, because the sequence
number is part of the payload (a drift summary's window key, a telemetry
report's ``seq``): a number is never handed out twice and never skipped
without being counted.

Invariants:

* per channel, ``seq`` only increases, across restarts (the counter is in the
  ``meta`` table, ``<channel>_next_seq``, and is advanced in the same
  transaction that stores the row);
* a channel holds at most ``max_items`` rows and ``max_bytes`` bytes; a new
  payload evicts the oldest rows of its channel first, and every eviction is
  counted in ``<channel>_dropped``, so a long offline period costs the oldest
  data, never the disk;
* a payload larger than ``max_bytes`` on its own is refused
  (:class:`ValueError`), never stored;
* rows leave only through :meth:`ack` (the transport confirmed them) or an
  eviction.

The link's sender drains each channel in order with :meth:`peek` and
:meth:`ack`; :attr:`wakeup` is set on every enqueue so it starts at once.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from agent.errors import StateError
from agent.statedb import StateDB

#: Largest sequence number a channel hands out (the wire formats' u32 / int32 bound).
MAX_SEQ = 2**31 - 1


@dataclass(frozen=True)
class ChannelLimit:
    max_items: int
    max_bytes: int

    def __post_init__(self) -> None:
        if self.max_items < 1 or self.max_bytes < 1:
            raise ValueError("a channel needs room for at least one item and one byte")


@dataclass(frozen=True)
class ChannelItem:
    id: int
    seq: int
    body: bytes
    meta: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ChannelStats:
    depth: int
    bytes: int
    dropped: int
    next_seq: int


class ChannelOutbox:
    """Per-channel durable queues of payloads in the state database."""

    def __init__(self, db: StateDB, limits: Mapping[str, ChannelLimit]) -> None:
        self.db = db
        self.limits = dict(limits)
        #: Set whenever a payload is queued, so the sender wakes up at once.
        self.wakeup = threading.Event()

    def _limit(self, channel: str) -> ChannelLimit:
        try:
            return self.limits[channel]
        except KeyError:
            raise ValueError(f"unknown channel {channel!r}") from None

    def enqueue(
        self,
        channel: str,
        build: Callable[[int], bytes],
        meta: Mapping[str, str] | None = None,
    ) -> int:
        """Store ``build(seq)`` with the channel's next ``seq``; return that ``seq``.

        Raises ValueError (nothing stored, no ``seq`` used) when the payload is
        larger than the channel's whole byte budget.
        """
        limit = self._limit(channel)
        with self.db.transaction(f"queue a {channel} payload") as c:
            seq = int(self.db.get(f"{channel}_next_seq", c) or 1)
            if seq > MAX_SEQ:
                raise StateError(f"the {channel} sequence is exhausted")
            body = build(seq)
            if len(body) > limit.max_bytes:
                raise ValueError(
                    f"a {channel} payload of {len(body)} bytes exceeds the queue's "
                    f"{limit.max_bytes} bytes"
                )
            self.db.put(f"{channel}_next_seq", seq + 1, c)
            self._make_room(c, channel, limit, len(body))
            c.execute(
                "INSERT INTO channel_outbox (channel, seq, body, meta, queued_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (channel, seq, body, json.dumps(dict(meta or {}), sort_keys=True), time.time()),
            )
        self.wakeup.set()
        return seq

    def _make_room(
        self, conn: sqlite3.Connection, channel: str, limit: ChannelLimit, incoming: int
    ) -> None:
        rows = conn.execute(
            "SELECT id, length(body) FROM channel_outbox WHERE channel = ? ORDER BY id",
            (channel,),
        ).fetchall()
        depth, total = len(rows), sum(int(size) for _, size in rows)
        victims: list[int] = []
        for row_id, size in rows:
            if depth < limit.max_items and total + incoming <= limit.max_bytes:
                break
            victims.append(int(row_id))
            depth, total = depth - 1, total - int(size)
        if victims:
            conn.executemany("DELETE FROM channel_outbox WHERE id = ?", [(v,) for v in victims])
            key = f"{channel}_dropped"
            self.db.put(key, int(self.db.get(key, conn) or 0) + len(victims), conn)

    def peek(self, channel: str, limit: int = 100) -> list[ChannelItem]:
        """The oldest ``limit`` payloads of ``channel``, in order, without removing them."""
        with self.db.reading() as c:
            rows = c.execute(
                "SELECT id, seq, body, meta FROM channel_outbox WHERE channel = ? "
                "ORDER BY id LIMIT ?",
                (channel, limit),
            ).fetchall()
        items = []
        for row_id, seq, body, text in rows:
            meta: object = None
            with contextlib.suppress(ValueError):
                meta = json.loads(text)
            items.append(ChannelItem(int(row_id), int(seq), bytes(body), _strings(meta)))
        return items

    def ack(self, ids: Iterable[int]) -> None:
        """Remove delivered (or permanently refused) payloads; unknown ids are ignored."""
        rows = [(int(i),) for i in ids]
        if rows:
            with self.db.transaction("acknowledge payloads") as c:
                c.executemany("DELETE FROM channel_outbox WHERE id = ?", rows)

    def depth(self) -> int:
        """Payloads queued over all channels."""
        with self.db.reading() as c:
            (count,) = c.execute("SELECT COUNT(*) FROM channel_outbox").fetchone()
        return int(count)

    def stats(self, channel: str) -> ChannelStats:
        with self.db.reading() as c:
            depth, size = c.execute(
                "SELECT COUNT(*), COALESCE(SUM(length(body)), 0) FROM channel_outbox "
                "WHERE channel = ?",
                (channel,),
            ).fetchone()
            dropped = int(self.db.get(f"{channel}_dropped", c) or 0)
            next_seq = int(self.db.get(f"{channel}_next_seq", c) or 1)
        return ChannelStats(int(depth), int(size), dropped, next_seq)


def _strings(meta: object) -> dict[str, str]:
    if not isinstance(meta, dict):
        return {}
    return {str(k): str(v) for k, v in meta.items()}


__all__ = ["MAX_SEQ", "ChannelItem", "ChannelLimit", "ChannelOutbox", "ChannelStats"]
