"""Fleet revert: giving devices their previous committed release again.

Theory of operation: a device returns to a release it committed before (the
trust model lets it install that again; anything older it never committed is
refused on the device). The director signs a new assignment of that release
with the online director key: no offline release key is needed, so an
emergency revert never waits for one.

* :meth:`FleetRevert.revert_targets` carries out an engine ``Revert``: every
  device of the scope that the rollout assigned gets its ``previous_release``
  (recorded when it was assigned) and becomes ``rolled_back``; one that had
  none becomes ``no_previous``; devices not assigned yet become ``cancelled``.
  Each device's assignment and its new status are written in one savepoint, by
  compare-and-set on the status, so a revert interrupted by a crash, or run by
  two replicas at once, finishes with each device reverted exactly once.
* :meth:`FleetRevert.revoke` revokes a release and reverts every device whose
  desired state is that release, including devices that are offline now: the
  revert assignment waits for them (retained on MQTT, served on long-poll),
  and it lists the revoked hash, so they never install it afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from control_plane.audit import audit
from control_plane.devices.director import Director
from control_plane.errors import ControlPlaneError
from control_plane.releases.service import ReleaseService
from control_plane.rollouts.engine import RevertScope
from control_plane.store import DeviceRecord, ReleaseRecord, Store
from control_plane.store.rollout_records import (
    TOUCHED,
    RolloutDeviceRecord,
    RolloutRecord,
    TargetStatus,
)
from fleetcore.metadata import ReleaseManifest

log = logging.getLogger("edgefleet.rollouts")
_BATCH = 200


@dataclass
class RevertSummary:
    reverted: int = 0
    cancelled: int = 0
    not_reverted: list[dict[str, str]] = field(default_factory=list)  # device, reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "reverted": self.reverted,
            "cancelled": self.cancelled,
            "not_reverted": self.not_reverted[:100],
            "not_reverted_count": len(self.not_reverted),
        }


class FleetRevert:
    def __init__(
        self,
        store: Store,
        director: Director,
        releases: ReleaseService,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.director = director
        self.releases = releases
        self.clock = clock

    def revert_targets(
        self, rollout: RolloutRecord, scope: RevertScope, wave: int, actor: str
    ) -> RevertSummary:
        summary = RevertSummary()
        now = self.clock().replace(microsecond=0)
        summary.cancelled = self.cancel_pending(rollout, f"{scope.value} revert", now)
        only = None if scope is RevertScope.ALL else wave
        releases: dict[int, tuple[ReleaseRecord, ReleaseManifest] | str] = {}
        while True:
            batch = self.store.list_targets(rollout.id, statuses=TOUCHED, wave=only, limit=_BATCH)
            if not batch:
                break
            devices = self.store.get_devices([t.device_id for t in batch])
            changed = []
            with self.store.transaction() as tx:
                for target in batch:
                    why = self._revert_one(
                        tx, rollout, target, devices.get(target.device_id), releases, now, actor
                    )
                    if why is None:
                        summary.reverted += 1
                        changed.append(target.device_id)
                    else:
                        summary.not_reverted.append({"device": target.device_id, "reason": why})
            self.director.notify(changed)
        return summary

    def cancel_pending(self, rollout: RolloutRecord, why: str, now: datetime) -> int:
        """Devices of every wave not assigned yet will not be: the rollout has ended."""
        cancelled = 0
        reason = f"never assigned: the rollout ended ({why})"
        while True:
            batch = self.store.list_targets(
                rollout.id, statuses=(TargetStatus.PENDING,), limit=_BATCH
            )
            if not batch:
                return cancelled
            with self.store.transaction() as tx:
                for target in batch:
                    cancelled += tx.update_target(
                        target.id,
                        status=TargetStatus.CANCELLED,
                        expect=(TargetStatus.PENDING,),
                        now=now,
                        reason=reason,
                    )

    def _revert_one(
        self,
        tx: Store,
        rollout: RolloutRecord,
        target: RolloutDeviceRecord,
        device: DeviceRecord | None,
        releases: dict[int, tuple[ReleaseRecord, ReleaseManifest] | str],
        now: datetime,
        actor: str,
    ) -> str | None:
        """Revert one target; ``None`` on success, else why not (recorded on the target)."""
        target_id, status, previous = target.id, target.status, target.previous_release
        # Keep what happened before the revert: a failed device's reason matters most.
        before = f"{status.value}: {target.reason}" if target.reason else status.value
        why = None
        if previous is None:
            why = f"it ran no earlier release of {rollout.model}"
        elif device is None or not device.active:
            why = "the device was decommissioned"
        else:
            release = self._release(rollout.model, previous, releases, now)
            if isinstance(release, str):
                why = release
            else:
                try:
                    with tx.transaction() as inner:
                        signed = self.director.assign_in(inner, device, *release, now, actor)
                        if not inner.update_target(
                            target_id,
                            status=TargetStatus.ROLLED_BACK,
                            expect=(status,),
                            now=now,
                            reason=f"reverted to release {previous} (was {before})",
                            revert_sequence=signed.sequence,
                        ):
                            raise _HandledError
                except _HandledError:
                    return "already handled by another revert"
                except ControlPlaneError as exc:
                    why = exc.message
                else:
                    return None
        tx.update_target(
            target_id,
            status=TargetStatus.NO_PREVIOUS,
            expect=(status,),
            now=now,
            reason=f"{why} (was {before})",
        )
        return why

    def _release(
        self,
        model: str,
        counter: int,
        cache: dict[int, tuple[ReleaseRecord, ReleaseManifest] | str],
        now: datetime,
    ) -> tuple[ReleaseRecord, ReleaseManifest] | str:
        if counter not in cache:
            try:
                cache[counter] = self.director.prepare(model, counter, now)
            except ControlPlaneError as exc:
                cache[counter] = f"release {counter} cannot be assigned: {exc.message}"
        return cache[counter]

    # -- revoke ------------------------------------------------------------------------------

    def revoke(
        self, model: str, counter: int, reason: str, actor: str
    ) -> tuple[ReleaseRecord, RevertSummary]:
        """Revoke the release, then move every device assigned to it back."""
        revoked = self.releases.revoke(model, counter, reason, actor)
        summary = self.revert_assigned(model, counter, actor)
        now = self.clock()
        with self.store.transaction() as tx:
            audit(tx, actor, "release.revert_devices", "release", f"{model}#{counter}",
                  summary.to_dict(), now)  # fmt: skip
        return revoked, summary

    def revert_assigned(self, model: str, counter: int, actor: str) -> RevertSummary:
        """Give every device whose desired state is ``model#counter`` an earlier release."""
        summary = RevertSummary()
        now = self.clock().replace(microsecond=0)
        assigned = self.store.latest_assignments_of(model, counter)
        releases: dict[int, tuple[ReleaseRecord, ReleaseManifest] | str] = {}
        for start in range(0, len(assigned), _BATCH):
            chunk = assigned[start : start + _BATCH]
            devices = self.store.get_devices([a.device_id for a in chunk])
            changed = []
            with self.store.transaction() as tx:
                for assignment in chunk:
                    device = devices.get(assignment.device_id)
                    why = self._fallback(device, model, counter, releases, now)
                    if isinstance(why, str):
                        summary.not_reverted.append({"device": assignment.device_id, "reason": why})
                        continue
                    assert device is not None
                    try:
                        with tx.transaction() as inner:
                            self.director.assign_in(inner, device, *why, now, actor)
                    except ControlPlaneError as exc:
                        summary.not_reverted.append(
                            {"device": assignment.device_id, "reason": exc.message}
                        )
                        continue
                    summary.reverted += 1
                    changed.append(device.id)
            self.director.notify(changed)
        return summary

    def _fallback(
        self,
        device: DeviceRecord | None,
        model: str,
        counter: int,
        releases: dict[int, tuple[ReleaseRecord, ReleaseManifest] | str],
        now: datetime,
    ) -> tuple[ReleaseRecord, ReleaseManifest] | str:
        if device is None or not device.active:
            return "the device was decommissioned"
        reasons = []
        for which in ("current", "previous"):
            installed = device.installed(which)
            if installed is None or installed.model != model or installed.release == counter:
                continue
            release = self._release(model, installed.release, releases, now)
            if not isinstance(release, str):
                return release
            reasons.append(release)
        return "; ".join(reasons) or f"it ran no other release of {model}"


class _HandledError(Exception):
    """A target another revert already handled: undo this savepoint, move on."""


__all__ = ["FleetRevert", "RevertSummary"]
