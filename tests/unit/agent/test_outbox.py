"""The outbox: seq assigned at enqueue and never repeated, ordered drain, acks, bounds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.outbox import Outbox
from agent.statedb import StateDB
from fleetcore.protocol import StatusReport, UpdateState

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


def report(state: UpdateState = UpdateState.DOWNLOADING) -> StatusReport:
    return StatusReport(device="dev-001", seq=1, time=NOW, state=state)


def seqs(outbox: Outbox) -> list[int]:
    return [item.seq for item in outbox.peek(10_000)]


def test_seq_is_assigned_in_order_and_written_into_the_body(tmp_path: Path) -> None:
    outbox = Outbox(StateDB.open(tmp_path))
    assert [outbox.enqueue(report()) for _ in range(3)] == [1, 2, 3]
    items = outbox.peek()
    assert [StatusReport.decode(i.body).seq for i in items] == [1, 2, 3]
    assert all(i.channel == "status" for i in items)


def test_ack_removes_only_confirmed_reports_and_seq_never_repeats(tmp_path: Path) -> None:
    db = StateDB.open(tmp_path)
    outbox = Outbox(db)
    for _ in range(4):
        outbox.enqueue(report())
    outbox.ack([1, 2])
    assert seqs(outbox) == [3, 4]
    outbox.ack([3, 4, 99])
    assert outbox.stats().depth == 0
    db.close()
    reopened = Outbox(StateDB.open(tmp_path))
    assert reopened.enqueue(report()) == 5  # not 1: the counter is durable


def test_bound_drops_oldest_non_terminal_first_and_counts(tmp_path: Path) -> None:
    outbox = Outbox(StateDB.open(tmp_path), max_reports=3)
    outbox.enqueue(report(UpdateState.COMMITTED))  # 1, terminal
    outbox.enqueue(report(UpdateState.NOTIFIED))  # 2
    outbox.enqueue(report(UpdateState.DOWNLOADING))  # 3
    outbox.enqueue(report(UpdateState.FAILED))  # 4: drops 2
    assert seqs(outbox) == [1, 3, 4]
    outbox.enqueue(report(UpdateState.REJECTED))  # 5: drops 3
    assert seqs(outbox) == [1, 4, 5]
    outbox.enqueue(report(UpdateState.VERIFYING))  # 6: all terminal: drops the oldest, 1
    assert seqs(outbox) == [4, 5, 6]
    stats = outbox.stats()
    assert (stats.depth, stats.dropped, stats.next_seq) == (3, 3, 7)


def test_enqueue_wakes_the_sender(tmp_path: Path) -> None:
    outbox = Outbox(StateDB.open(tmp_path))
    assert not outbox.wakeup.is_set()
    outbox.enqueue(report())
    assert outbox.wakeup.is_set()


def test_reports_and_counter_survive_kill_9(tmp_path: Path) -> None:
    """A writer killed with SIGKILL loses nothing it committed; seq continues after it."""
    script = textwrap.dedent(
        f"""
        import os, sys
        from datetime import datetime, timezone
        from pathlib import Path
        from agent.outbox import Outbox
        from agent.statedb import StateDB
        from fleetcore.protocol import StatusReport, UpdateState
        outbox = Outbox(StateDB.open(Path({str(tmp_path)!r})))
        now = datetime(2030, 1, 1, tzinfo=timezone.utc)
        for _ in range(25):
            outbox.enqueue(StatusReport("dev-001", 1, now, UpdateState.NOTIFIED))
        print("written", flush=True)
        os.kill(os.getpid(), {int(signal.SIGKILL)})
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[3],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert "written" in done.stdout
    outbox = Outbox(StateDB.open(tmp_path))
    assert seqs(outbox) == list(range(1, 26))
    assert outbox.enqueue(report()) == 26


def test_max_reports_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Outbox(StateDB.open(tmp_path), max_reports=0)


def test_database_uses_wal_and_full_sync(tmp_path: Path) -> None:
    db = StateDB.open(tmp_path)
    with db.reading() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
