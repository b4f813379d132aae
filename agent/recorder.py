"""Recording transitions: journal, trust state and status report, in one commit.

Theory of operation. :class:`Recorder` owns the in-memory :class:`Journal`
and is the only writer of it. :meth:`Recorder.enter` looks the next state up
in :mod:`agent.workflow`'s table (an illegal event raises and changes
nothing), saves the evolved journal (which carries the trust state) and
queues the status report announcing the new state in a single
:mod:`agent.statedb` transaction, and then calls the ``on_enter`` hook (the
test pause switch). :meth:`Recorder.save` persists progress that announces
nothing (download attempts, probation time observed, counters).

A report says what the device looks like at that moment: ``active`` is what
the slot pointer serves; ``previous`` is the release the device would fall
back to (the committed one while a new model is activating or on probation,
otherwise the previous committed one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.journal import Journal, JournalStore
from agent.outbox import Outbox
from agent.slots import read_active
from agent.statedb import StateDB
from agent.workflow import ACTIVATED, Event, next_state
from fleetcore import __version__
from fleetcore.protocol import Installed, StatusReport, UpdateState

log = logging.getLogger("agent.updater")


class Recorder:
    def __init__(
        self,
        *,
        data_dir: Path,
        device_id: str,
        db: StateDB,
        outbox: Outbox,
        clock: Callable[[], datetime],
        on_enter: Callable[[UpdateState], None],
    ) -> None:
        self.data_dir, self.device_id = data_dir, device_id
        self.db, self.outbox = db, outbox
        self.clock, self.on_enter = clock, on_enter
        self.store = JournalStore(db)
        self.journal = self.store.load()

    def report(self, j: Journal, **override: Any) -> StatusReport:
        upd = j.update
        slot = read_active(self.data_dir)
        active = None if slot is None else Installed(slot.model, slot.release, slot.sha256)
        if j.state is UpdateState.REVERTED:
            # The report is written before the pointer moves back; it describes
            # the outcome, which the revert (redone on resume) makes true.
            active = None if j.committed is None else j.committed.installed()
        fallback = j.committed if j.state in ACTIVATED else j.previous
        fields: dict[str, Any] = {
            "device": self.device_id,
            "seq": 1,  # the outbox assigns the real one
            "time": self.clock(),
            "state": j.state,
            "target": None if upd is None else upd.target.installed(),
            "assignment_sequence": None if upd is None else upd.sequence,
            "active": active,
            "previous": None if fallback is None else fallback.installed(),
            "reason": j.reason,
            "message": j.message,
            "agent_version": __version__,
        }
        fields.update(override)
        return StatusReport(**fields)

    def enter(self, event: Event, *, report: dict[str, Any] | None = None, **changes: Any) -> None:
        """Move along the table, persist and announce, then run the pause hook."""
        state = next_state(self.journal.state, event)
        changes.setdefault("reason", None)
        changes.setdefault("message", None)
        j = self.journal.evolve(state=state, clean_stop=False, **changes)
        with self.db.transaction("record an update state") as conn:
            self.store.save(j, conn)
            self.outbox.enqueue(self.report(j, **(report or {})), conn)
        self.journal = j
        target = "" if j.update is None else f" {j.update.target.model} r{j.update.target.release}"
        why = f" ({j.reason}: {j.message})" if j.reason else ""
        log.info("update state %s%s%s", state.value, target, why)
        self.on_enter(state)

    def announce(self, *, report: dict[str, Any], **changes: Any) -> None:
        """Persist ``changes`` and queue a report without changing state."""
        j = self.journal.evolve(**changes)
        with self.db.transaction("record a report") as conn:
            self.store.save(j, conn)
            self.outbox.enqueue(self.report(j, **report), conn)
        self.journal = j

    def save(self, **changes: Any) -> None:
        """Persist journal changes that announce nothing."""
        j = self.journal.evolve(**changes)
        self.store.save(j)
        self.journal = j


__all__ = ["Recorder"]
