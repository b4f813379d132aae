"""Records of drift policies and of the retraining triggers they fired.

A :class:`DriftPolicyRecord` holds a policy's normalised document (as
:meth:`~control_plane.retraining.policy.DriftPolicy.to_dict`) and its digest,
which ``fleetctl apply`` compares to stay idempotent. ``revision`` rises with
every change; ``trigger_count`` rises with every trigger claimed for it, and
the write that raises it is what serialises two replicas claiming at once.

A :class:`TriggerRecord` is one firing of one policy for one idempotency key:
the evidence, the payload sent, each action's progress, and the lease of the
worker attempting it. ``(policy, idempotency_key)`` is unique.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any


class TriggerStatus(str, Enum):
    PENDING = "pending"  # waiting for its (next) attempt
    FIRING = "firing"  # a worker holds it and is running its actions
    SUCCEEDED = "succeeded"  # every action succeeded
    FAILED = "failed"  # an action failed for good (attempts exhausted or refused)

    @property
    def finished(self) -> bool:
        return self in (TriggerStatus.SUCCEEDED, TriggerStatus.FAILED)


@dataclass
class DriftPolicyRecord:
    name: str
    model: str
    cohort: str | None
    spec: dict[str, Any]
    spec_digest: str
    created_at: datetime
    created_by: str
    updated_at: datetime
    revision: int = 0
    trigger_count: int = 0


@dataclass
class TriggerRecord:
    policy: str
    idempotency_key: str
    model: str
    release: int
    cohort: str | None
    status: TriggerStatus
    manual: bool
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime
    lease_s: int
    #: The document sent to every action (the evidence inside), as JSON.
    payload: dict[str, Any] = field(default_factory=dict)
    #: One entry per action: ``{"name", "type", "status", "attempts", "last_error"}``.
    actions: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    last_error: str | None = None
    finished_at: datetime | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None
    revision: int = 0
    id: int = 0


__all__ = ["DriftPolicyRecord", "TriggerRecord", "TriggerStatus"]
