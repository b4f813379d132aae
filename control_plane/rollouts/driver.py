"""The rollout driver: carries the engine's decisions out against the fleet.

Theory of operation: every ``rollout_tick_s`` each control-plane process
calls :meth:`RolloutDriver.tick`. It claims the leases of active rollouts
(:meth:`Store.claim_rollouts`; a rollout is driven by one replica at a time)
and for each one, in order:

1. **settles** assigned devices: the device's newest status report about the
   rollout's assignment decides ``committed``, ``failed`` or ``reverted``; a
   device silent past ``device_timeout`` (offline, stuck) fails with reason
   ``timeout``; a failure with retries left is assigned again;
2. **adds late joiners**: active devices that came to match the selector join
   the current wave (or are excluded, if they cannot run the release);
3. **assigns** pending devices of the open waves, in the rollout's order, as
   far as ``max_unavailable`` and ``rate_per_minute`` allow;
4. **observes** the current wave and feeds the counts and gate evidence to the
   engine; the engine's actions are carried out (audit records, reverts).

Crash safety: each device's assignment and its target's move to
``installing`` commit in one savepoint (compare-and-set on ``pending``), so a
``kill -9`` anywhere leaves every device either assigned once or still
pending; the next tick, on any replica, goes on from there. A revert that was
decided but not finished is written down first (phase ``reverting``) and
finished by whoever drives the rollout next.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from control_plane.devices.director import Director
from control_plane.errors import ControlPlaneError, StateError
from control_plane.rollouts.control import ACTIVE_PHASES, REVERTING, RolloutControl, load
from control_plane.rollouts.gates import (
    HealthSource,
    NoHealthSource,
    NoQualitySource,
    QualitySource,
    WaveCounts,
)
from control_plane.rollouts.plan import cannot_run, order_key, previous_release
from control_plane.rollouts.spec import QualityMode, RolloutSpec
from control_plane.store import DeviceRecord, ReleaseRecord, Store
from control_plane.store.rollout_records import (
    DeviceProgress,
    RolloutDeviceRecord,
    RolloutRecord,
    TargetStatus,
)
from fleetcore.metadata import ReleaseManifest
from fleetcore.protocol import UpdateState

log = logging.getLogger("edgefleet.rollouts")
_ASSIGN_BATCH = 250
_RATE_WINDOW_S = 10.0


@dataclass(frozen=True)
class DriverSettings:
    lease_s: float = 30.0
    join_check_s: float = 5.0
    max_assign_per_tick: int = 2000


def owner_id() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}"


class RolloutDriver:
    def __init__(
        self,
        store: Store,
        director: Director,
        control: RolloutControl,
        clock: Callable[[], datetime],
        settings: DriverSettings | None = None,
        *,
        health: HealthSource | None = None,
        quality: QualitySource | None = None,
    ) -> None:
        self.store = store
        self.director = director
        self.control = control
        self.clock = clock
        self.settings = settings or DriverSettings()
        self.health = health or NoHealthSource()
        self.quality = quality or NoQualitySource()
        self.owner = owner_id()
        self._joined_at: dict[str, datetime] = {}

    def tick(self) -> int:
        """Drive every rollout this process can claim once; return how many."""
        now = self.clock()
        until = now + timedelta(seconds=self.settings.lease_s)
        claimed = self.store.claim_rollouts(self.owner, [*ACTIVE_PHASES, REVERTING], now, until)
        for record in claimed:
            try:
                self.drive(record)
            except StateError as exc:  # an operator or a replica moved it meanwhile
                log.info("rollout %s: %s", record.name, exc.message)
            except Exception:  # one rollout's failure must not stop the others
                log.exception("rollout %s: driving failed; retrying next tick", record.name)
        return len(claimed)

    def release_all(self) -> None:
        """Give up every lease this process holds (a clean shutdown), so others go on at once."""
        for record in self.store.list_rollouts(phases=[*ACTIVE_PHASES, REVERTING]):
            if record.lease_owner == self.owner:
                self.store.release_rollout(record.id, self.owner)

    def drive(self, record: RolloutRecord) -> None:
        if record.phase == REVERTING:
            self.control.finish_revert(record, owner=self.owner)
            return
        spec, rollout = load(record)
        now = self.clock()
        if rollout.phase.value == "created":
            record = self.control.step(record, "start", owner=self.owner)
            spec, rollout = load(record)
        self._settle(record, spec, now)
        if not rollout.phase.assigning:
            return
        self._join_late(record, spec, rollout.state.wave, now)
        # A wave that opens or passes is acted on in the same tick (no idle tick between),
        # within a third of the lease, so the lease never runs out during a tick.
        started = time.monotonic()
        for _ in range(len(spec.waves) * 2 + 1):
            if time.monotonic() - started > self.settings.lease_s / 3:
                break
            before = (record.phase, record.state.get("wave"))
            record = self._advance(record, spec, now)
            _, rollout = load(record)
            if not rollout.phase.assigning or (record.phase, record.state.get("wave")) == before:
                break

    def _advance(self, record: RolloutRecord, spec: RolloutSpec, now: datetime) -> RolloutRecord:
        """Assign what the open waves allow, then observe the current wave once."""
        wave = int(record.state["wave"])
        self._assign(record, spec, wave, now)
        counts = self.wave_counts(record.id, wave)
        gates = spec.gates_of(wave)
        health = quality = None
        if gates.health is not None or gates.quality.mode is not QualityMode.OFF:
            devices = [
                t.device_id
                for t in self.store.list_targets(
                    record.id, statuses=(TargetStatus.COMMITTED,), wave=wave, limit=100_000
                )
            ]
            opened = record.state.get("wave_opened_at")
            since = record.created_at if opened is None else datetime.fromisoformat(opened)
            if gates.health is not None:
                health = self.health.measure(record.model, record.release, devices, since)
            if gates.quality.mode is not QualityMode.OFF:
                quality = self.quality.evaluate(record.id, record.model, record.release, devices)
        return self.control.observe(record, counts, health, quality, owner=self.owner)

    def wave_counts(self, rollout_id: str, wave: int) -> WaveCounts:
        by_status = self.store.tally(rollout_id).of(wave)
        count = by_status.get
        return WaveCounts(
            total=sum(
                count(s, 0)
                for s in (
                    TargetStatus.PENDING,
                    TargetStatus.INSTALLING,
                    TargetStatus.COMMITTED,
                    TargetStatus.FAILED,
                    TargetStatus.REVERTED,
                )
            ),
            pending=count(TargetStatus.PENDING, 0),
            installing=count(TargetStatus.INSTALLING, 0),
            committed=count(TargetStatus.COMMITTED, 0),
            failed=count(TargetStatus.FAILED, 0),
            reverted=count(TargetStatus.REVERTED, 0),
        )

    # -- 1. settle -------------------------------------------------------------------------

    def _settle(self, record: RolloutRecord, spec: RolloutSpec, now: datetime) -> None:
        timeout = timedelta(seconds=spec.device_timeout_s)
        retries: list[tuple[DeviceProgress, str]] = []
        with self.store.transaction() as tx:
            for progress in self.store.in_progress(record.id):
                outcome = _outcome(progress, now, timeout)
                if outcome is None:
                    continue
                status, reason = outcome
                retryable = status in (TargetStatus.FAILED, TargetStatus.REVERTED)
                if retryable and progress.target.attempts <= spec.retries:
                    retries.append((progress, reason))
                    continue
                tx.update_target(
                    progress.target.id,
                    status=status,
                    expect=(TargetStatus.INSTALLING,),
                    now=now,
                    reason=reason,
                )
                if status is not TargetStatus.COMMITTED:
                    log.warning("rollout %s: device %s %s (%s; device state %s, sequence %s/%s)",
                                record.name, progress.target.device_id, status.value, reason,
                                progress.state, progress.state_sequence,
                                progress.target.sequence)  # fmt: skip
        if retries:
            self._assign_targets(record, [p.target for p, _ in retries], now, retry=True)

    # -- 2. late joiners ---------------------------------------------------------------------

    def _join_late(
        self, record: RolloutRecord, spec: RolloutSpec, wave: int, now: datetime
    ) -> None:
        last = self._joined_at.get(record.id)
        if last is not None and now - last < timedelta(seconds=self.settings.join_check_s):
            return
        self._joined_at[record.id] = now
        known = self.store.target_device_ids(record.id)
        claimed = self.store.claimed_devices(record.model, ACTIVE_PHASES, exclude=record.id)
        fresh = [
            d
            for d in self.control.fleet()
            if d.id not in known and d.id not in claimed and spec.selector.matches(d.labels)
        ]
        if not fresh:
            return
        try:
            _, manifest = self.director.prepare(record.model, record.release, now)
        except ControlPlaneError:
            return  # the release went away; the engine's gates will see no progress
        targets = []
        for device in fresh:
            reasons = cannot_run(device, manifest)
            targets.append(
                RolloutDeviceRecord(
                    rollout_id=record.id,
                    device_id=device.id,
                    wave=wave,
                    order_key=order_key(record.id, device.id),
                    status=TargetStatus.EXCLUDED if reasons else TargetStatus.PENDING,
                    stratum=None
                    if spec.stratify_by is None
                    else device.labels.get(spec.stratify_by, ""),
                    previous_release=previous_release(device, record.model, record.release),
                    reason="; ".join(reasons) or None,
                )
            )
        added = self.store.add_targets(targets)
        if added:
            self.control.record(record, "rollout.devices_joined",
                                {"wave": wave, "devices": [t.device_id for t in targets][:50],
                                 "count": added})  # fmt: skip

    # -- 3. assign ----------------------------------------------------------------------------

    def _assign(self, record: RolloutRecord, spec: RolloutSpec, wave: int, now: datetime) -> None:
        room = self.settings.max_assign_per_tick
        tally = self.store.tally(record.id)
        installing = sum(c.get(TargetStatus.INSTALLING, 0) for c in tally.counts.values())
        total = sum(
            n
            for c in tally.counts.values()
            for s, n in c.items()
            if s not in (TargetStatus.EXCLUDED, TargetStatus.REMOVED)
        )
        cap = spec.unavailable_cap(total)
        if cap is not None:
            room = min(room, cap - installing)
        if spec.rate_per_minute is not None:
            window = timedelta(seconds=_RATE_WINDOW_S)
            allowed = math.ceil(spec.rate_per_minute * _RATE_WINDOW_S / 60)
            room = min(room, allowed - self.store.assigned_since(record.id, now - window))
        if room <= 0:
            return
        pending = self.store.list_targets(
            record.id, statuses=(TargetStatus.PENDING,), max_wave=wave, limit=room
        )
        if pending:
            self._assign_targets(record, pending, now, retry=False)

    def _assign_targets(
        self,
        record: RolloutRecord,
        targets: list[RolloutDeviceRecord],
        now: datetime,
        *,
        retry: bool,
    ) -> None:
        now = now.replace(microsecond=0)
        try:
            release, manifest = self.director.prepare(record.model, record.release, now)
        except ControlPlaneError as exc:
            log.warning("rollout %s cannot assign: %s", record.name, exc.message)
            return
        actor = f"rollout:{record.name}"
        for start in range(0, len(targets), _ASSIGN_BATCH):
            chunk = targets[start : start + _ASSIGN_BATCH]
            devices = self.store.get_devices([t.device_id for t in chunk])
            assigned: list[str] = []
            with self.store.transaction() as tx:
                # Read once per batch, in the transaction that stores the assignments.
                revoked = self.director.revoked_in(tx, release.model)
                for target in chunk:
                    device = devices.get(target.device_id)
                    if self._assign_one(
                        tx, target, device, release, manifest, now, actor, retry, revoked
                    ):
                        assigned.append(target.device_id)
            self.director.notify(assigned)

    def _assign_one(
        self,
        tx: Store,
        target: RolloutDeviceRecord,
        device: DeviceRecord | None,
        release: ReleaseRecord,
        manifest: ReleaseManifest,
        now: datetime,
        actor: str,
        retry: bool,
        revoked: list[str],
    ) -> bool:
        """Assign one target's device; whether it was assigned (the others are settled)."""
        expect = (TargetStatus.INSTALLING,) if retry else (TargetStatus.PENDING,)
        if device is None or not device.active:
            tx.update_target(target.id, status=TargetStatus.REMOVED, expect=expect, now=now,
                             reason="the device was decommissioned")  # fmt: skip
            return False
        previous = (
            target.previous_release
            if retry
            else previous_release(device, release.model, release.counter)
        )
        try:
            with tx.transaction() as inner:
                signed = self.director.assign_in(
                    inner, device, release, manifest, now, actor, revoked=revoked
                )
                inner.mark_assigned(
                    target.id, sequence=signed.sequence, now=now, previous_release=previous,
                    retry=retry,
                )  # fmt: skip
        except StateError as exc:
            log.info("rollout %s: %s not assigned: %s", actor, device.id, exc.message)
            return False
        except ControlPlaneError as exc:
            tx.update_target(target.id, status=TargetStatus.EXCLUDED, expect=expect, now=now,
                             reason=exc.message)  # fmt: skip
            return False
        return True


def _outcome(  # noqa: PLR0911 - one return per outcome reads best
    progress: DeviceProgress, now: datetime, timeout: timedelta
) -> tuple[TargetStatus, str] | None:
    target = progress.target
    if progress.decommissioned:
        return TargetStatus.REMOVED, "the device was decommissioned"
    if target.sequence is not None and progress.desired_sequence > target.sequence:
        return (
            TargetStatus.REMOVED,
            f"reassigned outside the rollout (assignment {progress.desired_sequence})",
        )
    if progress.state_sequence == target.sequence:
        state = progress.state
        if state == UpdateState.COMMITTED.value:
            return TargetStatus.COMMITTED, "committed"
        if state in (UpdateState.FAILED.value, UpdateState.REJECTED.value):
            return TargetStatus.FAILED, progress.reason or state
        if state == UpdateState.REVERTED.value:
            return TargetStatus.REVERTED, progress.reason or "reverted"
    assigned = target.assigned_at
    if assigned is not None and now - assigned > timeout:
        return TargetStatus.FAILED, f"timeout: no outcome within {timeout.total_seconds():g}s"
    return None


__all__ = ["DriverSettings", "RolloutDriver", "owner_id"]
