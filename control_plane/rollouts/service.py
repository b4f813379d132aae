"""Rollouts for operators: plan, create, apply, inspect and command them.

Theory of operation: :meth:`RolloutService.create` resolves the spec's
release (it must be released and not expired), plans the target
(:mod:`control_plane.rollouts.plan`) and stores the rollout with every target
device and its wave in one transaction, in phase ``created``; the driver
starts it on its next tick. A rollout is refused, with the devices named, when
any targeted device is already held by another active rollout of the same
model, or when nothing at all can run the release.

:meth:`RolloutService.apply` is the GitOps entry point: the same document
applied twice changes nothing; a document that differs only in ``paused``
pauses or resumes; any other change to an existing rollout is refused (its
waves and gates are history once devices were assigned).

Commands (pause, resume, promote, abort, rollback) go through
:class:`~control_plane.rollouts.control.RolloutControl`; a write that loses a
race with the driver is retried on the fresh record.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from control_plane.audit import audit
from control_plane.devices.director import Director
from control_plane.errors import ConflictError, InvalidInputError, NotFoundError, StateError
from control_plane.releases.service import ReleaseService
from control_plane.rollouts.control import ACTIVE_PHASES, RolloutControl, command, load
from control_plane.rollouts.engine import IllegalEventError, RolloutState
from control_plane.rollouts.plan import Plan, plan
from control_plane.rollouts.revert import RevertSummary
from control_plane.rollouts.spec import RolloutSpec, parse_spec
from control_plane.store import ReleaseRecord, Store
from control_plane.store.rollout_records import (
    RolloutDeviceRecord,
    RolloutRecord,
    TargetStatus,
    WaveTally,
)

_RETRIES = 8
#: Pause reasons that come from a document's ``paused: true`` (apply's, the engine's at start).
SPEC_PAUSES = ("paused by spec.paused", "created paused (spec.paused)")
COMMANDS = ("pause", "resume", "promote", "abort", "rollback")


def new_rollout_id() -> str:
    return "ro-" + secrets.token_hex(5)


@dataclass(frozen=True)
class Planned:
    """A rollout as it would be created: release, plan, and the id it was planned for."""

    rollout_id: str
    spec: RolloutSpec
    release: int
    plan: Plan


@dataclass(frozen=True)
class RolloutView:
    record: RolloutRecord
    tally: WaveTally


@dataclass(frozen=True)
class Applied:
    result: str  # created | unchanged | paused | resumed
    view: RolloutView


class RolloutService:
    def __init__(
        self,
        store: Store,
        director: Director,
        releases: ReleaseService,
        control: RolloutControl,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.director = director
        self.releases = releases
        self.control = control
        self.clock = clock

    # -- planning and creating ---------------------------------------------------------

    def plan(self, document: Any, *, rollout_id: str | None = None) -> Planned:
        spec = parse_spec(document)
        rollout_id = rollout_id or new_rollout_id()
        record = (
            self.releases.for_version(spec.model, spec.version)
            if spec.version is not None
            else self.releases.get(spec.model, spec.release or 0)
        )
        _, manifest = self.director.prepare(record.model, record.counter, self.clock())
        claimed = self.store.claimed_devices(spec.model, ACTIVE_PHASES)
        planned = plan(rollout_id, spec, record.counter, manifest, self.control.fleet(), claimed)
        return Planned(rollout_id, spec, record.counter, planned)

    def create(self, document: Any, actor: str) -> tuple[RolloutView, Plan]:
        planned = self.plan(document)
        spec, found = planned.spec, planned.plan
        if found.conflicts:
            shown = ", ".join(f"{d} (in {r})" for d, r in sorted(found.conflicts.items())[:5])
            more = len(found.conflicts) - 5
            raise ConflictError(
                f"{len(found.conflicts)} targeted device(s) are already in an active rollout of "
                f"{spec.model}: {shown}{f' and {more} more' if more > 0 else ''}; abort that "
                "rollout or narrow the selector"
            )
        if not found.targets:
            why = (
                f"; {len(found.excluded)} matching device(s) cannot run it"
                if found.excluded
                else ""
            )
            raise InvalidInputError(f"no device of the target can take this release{why}")
        if self.store.find_rollout(spec.name) is not None:
            raise ConflictError(f"a rollout named {spec.name!r} already exists")
        now = self.clock()
        record = RolloutRecord(
            id=planned.rollout_id,
            name=spec.name,
            model=spec.model,
            release=planned.release,
            spec=spec.to_dict(),
            spec_digest=spec.digest(),
            phase="created",
            state=RolloutState().to_dict(),
            created_at=now,
            created_by=actor,
            updated_at=now,
        )
        targets = [
            RolloutDeviceRecord(
                rollout_id=record.id,
                device_id=t.device_id,
                wave=t.wave,
                order_key=t.order_key,
                status=TargetStatus.PENDING,
                stratum=t.stratum,
                previous_release=t.previous_release,
            )
            for t in found.targets
        ] + [
            RolloutDeviceRecord(
                rollout_id=record.id,
                device_id=e.device_id,
                wave=0,
                order_key="",
                status=TargetStatus.EXCLUDED,
                reason="; ".join(e.reasons),
            )
            for e in found.excluded
        ]
        with self.store.transaction() as tx:
            # Again inside the write transaction: a rollout created since the plan may
            # have taken some of these devices.
            taken = tx.claimed_devices(spec.model, ACTIVE_PHASES)
            raced = sorted({t.device_id for t in targets} & set(taken))
            if raced:
                raise ConflictError(
                    f"{len(raced)} targeted device(s) were just taken by another rollout of "
                    f"{spec.model} (e.g. {raced[0]} in {taken[raced[0]]}); plan again"
                )
            stored = tx.add_rollout(record, targets)
            change = {
                "name": spec.name,
                "model": spec.model,
                "release": planned.release,
                "wave_sizes": found.wave_sizes,
                "excluded": len(found.excluded),
                "dry_run": spec.dry_run,
            }
            audit(tx, actor, "rollout.create", "rollout", record.id, change, now)
        return self.view(stored.id), found

    def apply(self, document: Any, actor: str) -> tuple[Applied, Plan | None]:
        spec = parse_spec(document)
        existing = self.store.find_rollout(spec.name)
        if existing is None:
            view, found = self.create(document, actor)
            return Applied("created", view), found
        if existing.spec_digest != spec.digest():
            raise ConflictError(
                f"rollout {spec.name!r} ({existing.id}) exists with a different spec; only "
                "'paused' can change on a stored rollout: abort it and apply under a new name"
            )
        _, rollout = load(existing)
        phase = rollout.phase.value
        if spec.paused and phase in ("progressing", "soaking", "awaiting_approval"):
            self.command(existing.id, "pause", actor, SPEC_PAUSES[0])
            return Applied("paused", self.view(existing.id)), None
        # Resume only a pause that a document made: the stored spec keeps the ``paused`` it
        # was created with, and an operator's or a gate's pause is not the document's to undo.
        if not spec.paused and phase == "paused" and rollout.state.reason in SPEC_PAUSES:
            self.command(existing.id, "resume", actor)
            return Applied("resumed", self.view(existing.id)), None
        return Applied("unchanged", self.view(existing.id)), None

    # -- reading ------------------------------------------------------------------------------

    def get(self, ref: str) -> RolloutRecord:
        """A rollout by id (``ro-…``) or by name."""
        found = self.store.get_rollout(ref) or self.store.find_rollout(ref)
        if found is None:
            raise NotFoundError(f"no rollout {ref!r}")
        return found

    def view(self, ref: str) -> RolloutView:
        record = self.get(ref)
        return RolloutView(record, self.store.tally(record.id))

    def list_rollouts(self, *, active: bool = False, model: str | None = None) -> list[RolloutView]:
        phases = [*ACTIVE_PHASES, "reverting"] if active else None
        records = self.store.list_rollouts(phases=phases, model=model)
        return [RolloutView(r, self.store.tally(r.id)) for r in records]

    def targets(
        self,
        ref: str,
        *,
        status: TargetStatus | None = None,
        wave: int | None = None,
        limit: int = 1000,
    ) -> list[RolloutDeviceRecord]:
        record = self.get(ref)
        statuses = None if status is None else (status,)
        return self.store.list_targets(record.id, statuses=statuses, wave=wave, limit=limit)

    # -- revoking a release ---------------------------------------------------------------

    def revoke(
        self, model: str, counter: int, reason: str, actor: str
    ) -> tuple[ReleaseRecord, RevertSummary]:
        """Revoke a release: abort its active rollouts, then revert every device assigned it."""
        revoked, summary = self.control.revert.revoke(model, counter, reason, actor)
        for record in self.store.list_rollouts(phases=ACTIVE_PHASES, model=model):
            if record.release == counter:
                self.command(record.id, "abort", actor, f"release {counter} was revoked: {reason}")
        return revoked, summary

    # -- commands --------------------------------------------------------------------------

    def command(self, ref: str, name: str, actor: str, reason: str | None = None) -> RolloutView:
        if name not in COMMANDS:
            raise InvalidInputError(f"unknown command {name!r}: use one of {', '.join(COMMANDS)}")
        for _ in range(_RETRIES):
            record = self.get(ref)
            try:
                self.control.apply(record, command(name, actor, reason), actor=actor)
            except IllegalEventError:
                # Judged on the phase we read: if the driver moved the rollout since
                # (it was just starting, say), judge the command again on the new phase.
                if self.get(ref).revision == record.revision:
                    raise
                continue
            except StateError:
                continue  # the driver wrote meanwhile: read again
            return self.view(record.id)
        raise ConflictError(f"rollout {ref} kept changing; try the command again")


__all__ = ["COMMANDS", "Applied", "Planned", "RolloutService", "RolloutView", "new_rollout_id"]
