"""Records of rollouts and of the devices each rollout targets.

A :class:`RolloutRecord` holds the normalised spec, the engine's state (as
:meth:`~control_plane.rollouts.engine.RolloutState.to_dict`) and the lease of
the replica driving it. ``revision`` rises with every state write; writes
name the revision they read, so two writers never overwrite each other.

A :class:`RolloutDeviceRecord` is one device of one rollout: its wave, its
place in the deterministic order, and how far it got.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any


class TargetStatus(str, Enum):
    """Where one device of a rollout stands."""

    PENDING = "pending"  # in the target, not assigned yet
    INSTALLING = "installing"  # assigned, no outcome yet
    COMMITTED = "committed"
    FAILED = "failed"  # failed, rejected, or timed out
    REVERTED = "reverted"  # the agent reverted the release during probation
    EXCLUDED = "excluded"  # cannot run the release (capabilities)
    CANCELLED = "cancelled"  # never assigned: the rollout stopped first
    ROLLED_BACK = "rolled_back"  # given its previous release again
    NO_PREVIOUS = "no_previous"  # to be rolled back, but it had no earlier release
    REMOVED = "removed"  # decommissioned or reassigned outside the rollout

    @property
    def settled(self) -> bool:
        return self not in (TargetStatus.PENDING, TargetStatus.INSTALLING)


#: Statuses of a device the rollout assigned (a rollback reverts these).
TOUCHED = (
    TargetStatus.INSTALLING,
    TargetStatus.COMMITTED,
    TargetStatus.FAILED,
    TargetStatus.REVERTED,
)


@dataclass
class RolloutRecord:
    id: str
    name: str
    model: str
    release: int
    spec: dict[str, Any]
    spec_digest: str
    phase: str
    state: dict[str, Any]
    created_at: datetime
    created_by: str
    updated_at: datetime
    revision: int = 0
    lease_owner: str | None = None
    lease_until: datetime | None = None


@dataclass
class RolloutDeviceRecord:
    rollout_id: str
    device_id: str
    wave: int
    order_key: str
    status: TargetStatus
    stratum: str | None = None
    attempts: int = 0
    sequence: int | None = None
    assigned_at: datetime | None = None
    finished_at: datetime | None = None
    previous_release: int | None = None
    revert_sequence: int | None = None
    reason: str | None = None
    id: int = 0


@dataclass(frozen=True)
class DeviceProgress:
    """A device the rollout assigned, with what the device last reported."""

    target: RolloutDeviceRecord
    desired_sequence: int
    state_sequence: int | None
    state: str | None
    reason: str | None
    decommissioned: bool


@dataclass
class WaveTally:
    """Count of devices per status, per wave."""

    counts: dict[int, dict[TargetStatus, int]] = field(default_factory=dict)

    def of(self, wave: int) -> dict[TargetStatus, int]:
        return self.counts.get(wave, {})


__all__ = [
    "TOUCHED",
    "DeviceProgress",
    "RolloutDeviceRecord",
    "RolloutRecord",
    "TargetStatus",
    "WaveTally",
]
