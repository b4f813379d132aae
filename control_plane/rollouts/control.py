"""Moving a stored rollout: load it, apply an engine event, persist, carry out the actions.

Theory of operation: both the operator's commands (through
:class:`~control_plane.rollouts.service.RolloutService`) and the driver's
ticks go through :meth:`RolloutControl.apply`. It rebuilds the
:class:`~control_plane.rollouts.engine.Rollout` from the record, applies the
event, and in one transaction writes the new state (compare-and-set on the
record's revision and, for the driver, its lease) together with an audit entry
for every decision the engine recorded, with its evidence. A ``Revert`` action
is first written down (the phase column reads ``reverting`` and the state
keeps the revert's scope), then carried out, then cleared: a crash in between
leaves a rollout that the next driver tick finishes reverting.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from control_plane.audit import audit
from control_plane.errors import StateError
from control_plane.rollouts.engine import (
    ACTIVE,
    Abort,
    Event,
    Observe,
    Pause,
    Phase,
    Promote,
    Record,
    Resume,
    Revert,
    RevertScope,
    Rollback,
    Rollout,
    RolloutState,
    Start,
)
from control_plane.rollouts.gates import GateResult, HealthEvidence, WaveCounts
from control_plane.rollouts.revert import FleetRevert
from control_plane.rollouts.spec import RolloutSpec, parse_spec
from control_plane.store import DeviceRecord, Store
from control_plane.store.rollout_records import RolloutRecord

#: The phase column of a rollout whose revert was decided but not finished.
REVERTING = "reverting"
ACTIVE_PHASES = tuple(sorted(p.value for p in ACTIVE))
_REVERT_KEY = "revert"


def load(record: RolloutRecord) -> tuple[RolloutSpec, Rollout]:
    spec = parse_spec(record.spec)
    return spec, Rollout(spec, RolloutState.from_dict(record.state))


def command(name: str, actor: str, reason: str | None = None) -> Event:
    """An operator's command as an engine event."""
    events: dict[str, Callable[[], Event]] = {
        "start": Start,
        "pause": lambda: Pause(actor, reason or "paused by an operator"),
        "resume": lambda: Resume(actor),
        "promote": lambda: Promote(actor),
        "abort": lambda: Abort(actor, reason or "aborted by an operator"),
        "rollback": lambda: Rollback(actor, reason or "rolled back by an operator"),
    }
    return events[name]()


class RolloutControl:
    def __init__(
        self,
        store: Store,
        revert: FleetRevert,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.revert = revert
        self.clock = clock

    def fleet(self) -> list[DeviceRecord]:
        """Every active device, paged through."""
        devices: list[DeviceRecord] = []
        after = None
        while True:
            page = self.store.list_devices(after=after, limit=1000)
            devices += page
            if len(page) < 1000:
                return devices
            after = page[-1].id

    def step(
        self, record: RolloutRecord, name: str, *, actor: str = "engine", owner: str | None = None
    ) -> RolloutRecord:
        return self.apply(record, command(name, actor), actor=actor, owner=owner)

    def observe(
        self,
        record: RolloutRecord,
        counts: WaveCounts,
        health: HealthEvidence | None,
        quality: GateResult | None,
        *,
        owner: str | None = None,
    ) -> RolloutRecord:
        return self.apply(record, Observe(counts, health, quality), actor="engine", owner=owner)

    def apply(
        self, record: RolloutRecord, event: Event, *, actor: str, owner: str | None = None
    ) -> RolloutRecord:
        """Apply ``event`` and persist; StateError if the record changed since it was read."""
        _, rollout = load(record)
        now = self.clock()
        actions = rollout.apply(event, now)
        reverts = [a for a in actions if isinstance(a, Revert)]
        state = rollout.state.to_dict()
        phase = rollout.phase.value
        if reverts:
            state[_REVERT_KEY] = {"scope": reverts[0].scope.value, "wave": reverts[0].wave,
                                  "actor": actor}  # fmt: skip
            phase = REVERTING
        records = [a for a in actions if isinstance(a, Record)]
        if not records and state == record.state and phase == record.phase:
            return record  # nothing changed: no write, no revision bump
        with self.store.transaction() as tx:
            saved = tx.save_rollout(
                record.id,
                phase=phase,
                state=state,
                expect_revision=record.revision,
                now=now,
                owner=owner,
            )
            for item in records:
                self._audit(tx, record, item.decision, item.evidence, now, actor)
        if rollout.phase is Phase.ABORTED:
            self.revert.cancel_pending(saved, "aborted", now)
        if reverts:
            # Another writer may finish it first; its targets are compare-and-set.
            with contextlib.suppress(StateError):
                saved = self.finish_revert(saved, owner=owner)
        return saved

    def finish_revert(self, record: RolloutRecord, *, owner: str | None = None) -> RolloutRecord:
        pending = record.state.get(_REVERT_KEY)
        if not isinstance(pending, dict):
            return record
        scope = RevertScope(pending["scope"])
        summary = self.revert.revert_targets(record, scope, int(pending["wave"]),
                                             str(pending.get("actor", "engine")))  # fmt: skip
        state = {k: v for k, v in record.state.items() if k != _REVERT_KEY}
        now = self.clock()
        with self.store.transaction() as tx:
            saved = tx.save_rollout(
                record.id,
                phase=str(state["phase"]),
                state=state,
                expect_revision=record.revision,
                now=now,
                owner=owner,
            )
            evidence = {"scope": scope.value, "wave": pending["wave"], **summary.to_dict()}
            self._audit(tx, record, "rollout.reverted", evidence, now, str(pending.get("actor")))
        return saved

    def record(self, record: RolloutRecord, decision: str, evidence: dict[str, Any]) -> None:
        with self.store.transaction() as tx:
            self._audit(tx, record, decision, evidence, self.clock(), "engine")

    @staticmethod
    def _audit(
        tx: Store,
        record: RolloutRecord,
        decision: str,
        evidence: dict[str, Any],
        now: datetime,
        actor: str,
    ) -> None:
        change = {"rollout": record.name, "model": record.model, "release": record.release,
                  **evidence}  # fmt: skip
        audit(tx, actor, decision, "rollout", record.id, change, now)


__all__ = ["ACTIVE_PHASES", "REVERTING", "RolloutControl", "command", "load"]
