"""The rollout half of the storage port (see :mod:`control_plane.store.port`).

Invariants the adapters keep:

* A rollout's state is written only by compare-and-set on its ``revision``
  (and, for the driver, on its lease owner), so an operator's pause and the
  driver's tick never overwrite each other: the loser gets StateError and
  reads again.
* :meth:`claim_rollouts` hands each active rollout to at most one owner at a
  time: a lease is taken only when it is free, expired or already the
  caller's. On PostgreSQL the candidates are locked ``FOR UPDATE SKIP
  LOCKED``, so replicas claiming at once never wait for each other.
* :meth:`mark_assigned` moves a target from ``pending`` to ``installing`` only
  if it is still pending: inside the transaction that stores the device's
  assignment, it makes a second assignment of the same device by the same
  rollout impossible, whatever replica or restart attempts it.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, Protocol

from control_plane.store.records import DeviceAssignmentRecord, DeviceRecord
from control_plane.store.rollout_records import (
    DeviceProgress,
    RolloutDeviceRecord,
    RolloutRecord,
    TargetStatus,
    WaveTally,
)


class RolloutStore(Protocol):
    def add_rollout(
        self, record: RolloutRecord, targets: list[RolloutDeviceRecord]
    ) -> RolloutRecord:
        """Insert a rollout and its targets; ConflictError if the id or the name exists."""
        ...

    def get_rollout(self, rollout_id: str) -> RolloutRecord | None: ...

    def find_rollout(self, name: str) -> RolloutRecord | None: ...

    def list_rollouts(
        self, *, phases: Collection[str] | None = None, model: str | None = None, limit: int = 200
    ) -> list[RolloutRecord]:
        """Newest first."""
        ...

    def save_rollout(
        self,
        rollout_id: str,
        *,
        phase: str,
        state: dict[str, Any],
        expect_revision: int,
        now: datetime,
        owner: str | None = None,
    ) -> RolloutRecord:
        """Write the engine state if the revision (and, with ``owner``, the lease) still holds.

        StateError, nothing written, otherwise. The revision rises by one."""
        ...

    def claim_rollouts(
        self, owner: str, phases: Collection[str], now: datetime, until: datetime, limit: int = 50
    ) -> list[RolloutRecord]:
        """Take or renew the lease of rollouts in ``phases`` that are free, expired or ours."""
        ...

    def release_rollout(self, rollout_id: str, owner: str) -> None:
        """Give the lease up (no error if it is not ours)."""
        ...

    # -- targets ----------------------------------------------------------------------------
    def add_targets(self, targets: list[RolloutDeviceRecord]) -> int:
        """Insert targets that are not in their rollout yet; return how many were new."""
        ...

    def target_device_ids(self, rollout_id: str) -> set[str]: ...

    def claimed_devices(
        self, model: str, phases: Collection[str], *, exclude: str | None = None
    ) -> dict[str, str]:
        """``device id -> rollout id`` for devices in rollouts of ``model`` in ``phases``."""
        ...

    def tally(self, rollout_id: str) -> WaveTally: ...

    def list_targets(
        self,
        rollout_id: str,
        *,
        statuses: Collection[TargetStatus] | None = None,
        max_wave: int | None = None,
        wave: int | None = None,
        limit: int = 1000,
    ) -> list[RolloutDeviceRecord]:
        """By wave, then order key (the rollout's deterministic order)."""
        ...

    def in_progress(self, rollout_id: str) -> list[DeviceProgress]:
        """Installing targets, each with its device's newest state."""
        ...

    def assigned_since(self, rollout_id: str, since: datetime) -> int:
        """Targets assigned at or after ``since`` (for the rate limit)."""
        ...

    def mark_assigned(
        self,
        target_id: int,
        *,
        sequence: int,
        now: datetime,
        previous_release: int | None,
        retry: bool = False,
    ) -> None:
        """``pending`` (or, with ``retry``, ``installing``) -> ``installing``; else StateError."""
        ...

    def update_target(
        self,
        target_id: int,
        *,
        status: TargetStatus,
        expect: Collection[TargetStatus],
        now: datetime,
        reason: str | None = None,
        revert_sequence: int | None = None,
    ) -> bool:
        """Set the status if the target is in one of ``expect``; return whether it was."""
        ...

    def get_devices(self, device_ids: Collection[str]) -> dict[str, DeviceRecord]:
        """The stored devices among ``device_ids`` (decommissioned ones too)."""
        ...

    def latest_assignments_of(self, model: str, release: int) -> list[DeviceAssignmentRecord]:
        """Active devices whose desired state is ``release`` of ``model``."""
        ...


__all__ = ["RolloutStore"]
