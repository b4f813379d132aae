"""The drift/telemetry/capture queues: bounded, oldest dropped and counted, seqs only increase."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent._channel_outbox import ChannelLimit, ChannelOutbox
from agent.statedb import StateDB


def queue(tmp_path: Path, items: int = 3, size: int = 1000) -> ChannelOutbox:
    limits = {"drift": ChannelLimit(items, size), "telemetry": ChannelLimit(100, 100_000)}
    return ChannelOutbox(StateDB.open(tmp_path), limits)


def test_the_seq_is_built_into_the_payload_and_increases_per_channel(tmp_path: Path) -> None:
    q = queue(tmp_path)
    assert q.enqueue("drift", lambda seq: b"d%d" % seq) == 1
    assert q.enqueue("drift", lambda seq: b"d%d" % seq) == 2
    assert q.enqueue("telemetry", lambda seq: b"t%d" % seq) == 1
    assert [i.body for i in q.peek("drift")] == [b"d1", b"d2"]
    assert [i.seq for i in q.peek("telemetry")] == [1]
    assert q.wakeup.is_set()


def test_the_oldest_are_dropped_first_and_counted_when_full(tmp_path: Path) -> None:
    q = queue(tmp_path, items=3)
    for _ in range(5):
        q.enqueue("drift", lambda seq: b"x%d" % seq)
    assert [i.seq for i in q.peek("drift")] == [3, 4, 5]
    stats = q.stats("drift")
    assert (stats.depth, stats.dropped, stats.next_seq) == (3, 2, 6)
    assert q.stats("telemetry").dropped == 0  # other channels keep their room


def test_the_byte_budget_bounds_a_channel_too(tmp_path: Path) -> None:
    q = queue(tmp_path, items=100, size=250)
    for _ in range(5):
        q.enqueue("drift", lambda seq: bytes(100))
    stats = q.stats("drift")
    assert stats.depth == 2 and stats.bytes == 200 and stats.dropped == 3


def test_a_payload_over_the_budget_is_refused_without_using_a_seq(tmp_path: Path) -> None:
    q = queue(tmp_path, size=10)
    with pytest.raises(ValueError, match="exceeds"):
        q.enqueue("drift", lambda seq: bytes(11))
    assert q.stats("drift").next_seq == 1
    assert q.enqueue("drift", lambda seq: b"ok") == 1


def test_ack_removes_exactly_the_confirmed_items(tmp_path: Path) -> None:
    q = queue(tmp_path)
    for _ in range(3):
        q.enqueue("drift", lambda seq: b"%d" % seq, {"k": "v"})
    items = q.peek("drift")
    assert items[0].meta == {"k": "v"}
    q.ack([items[0].id, items[2].id, 999])
    assert [i.seq for i in q.peek("drift")] == [2]
    assert q.depth() == 1


def test_queue_and_seq_survive_a_restart(tmp_path: Path) -> None:
    q = queue(tmp_path)
    q.enqueue("drift", lambda seq: b"a")
    q.enqueue("drift", lambda seq: b"b")
    q.ack([q.peek("drift")[0].id])
    q.db.close()
    again = queue(tmp_path)
    assert [i.body for i in again.peek("drift")] == [b"b"]
    assert again.enqueue("drift", lambda seq: b"c") == 3  # never 1 or 2 again


def test_a_builder_failure_stores_nothing(tmp_path: Path) -> None:
    q = queue(tmp_path)

    def broken(seq: int) -> bytes:
        raise ValueError("cannot encode")

    with pytest.raises(ValueError, match="cannot encode"):
        q.enqueue("drift", broken)
    assert q.stats("drift") == q.stats("drift").__class__(0, 0, 0, 1)


def test_unknown_channels_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown channel"):
        queue(tmp_path).enqueue("status", lambda seq: b"")
