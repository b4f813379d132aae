"""The retraining half of the storage port: drift policies and their triggers.

Invariants the adapters keep:

* ``(policy, idempotency_key)`` is unique: :meth:`add_trigger` of a key that
  is stored raises ConflictError, whatever replica or restart attempts it, so
  a key fires at most once.
* :meth:`lock_policy` is one conditional UPDATE of the policy row. Inside a
  transaction it holds the row's lock (PostgreSQL) or the write lock taken at
  BEGIN (SQLite) until commit, so two replicas deciding on the same policy
  (cooldown read, then insert) run one after the other, never interleaved.
* :meth:`claim_triggers` hands each unfinished trigger that is due to at most
  one worker at a time (lease free, expired or already the caller's);
  :meth:`save_trigger` writes only if the revision and the lease still hold.
"""

from __future__ import annotations

from collections.abc import Collection
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from control_plane.store.port import Store
from control_plane.store.retraining_records import (
    DriftPolicyRecord,
    TriggerRecord,
    TriggerStatus,
)


class RetrainingStore(Store, Protocol):
    def transaction(self) -> AbstractContextManager[RetrainingStore]:
        """A store whose writes commit together at the end of the block."""
        ...

    # -- policies ---------------------------------------------------------------------------
    def get_policy(self, name: str) -> DriftPolicyRecord | None: ...

    def list_policies(self, model: str | None = None) -> list[DriftPolicyRecord]:
        """By name."""
        ...

    def add_policy(self, record: DriftPolicyRecord) -> DriftPolicyRecord:
        """Insert; ConflictError if the name exists."""
        ...

    def update_policy(
        self,
        name: str,
        *,
        model: str,
        cohort: str | None,
        spec: dict[str, Any],
        spec_digest: str,
        now: datetime,
        expect_revision: int,
    ) -> DriftPolicyRecord:
        """Replace the document if the revision still holds (StateError otherwise)."""
        ...

    def delete_policy(self, name: str) -> None:
        """NotFoundError if absent; its triggers stay, as history."""
        ...

    def lock_policy(self, name: str) -> DriftPolicyRecord:
        """Count a trigger claim on the policy row, locking it; NotFoundError if absent."""
        ...

    # -- triggers ---------------------------------------------------------------------------
    def add_trigger(self, record: TriggerRecord) -> TriggerRecord:
        """Insert; ConflictError if ``(policy, idempotency_key)`` exists."""
        ...

    def get_trigger(self, trigger_id: int) -> TriggerRecord | None: ...

    def find_trigger(self, policy: str, idempotency_key: str) -> TriggerRecord | None: ...

    def last_trigger(
        self, policy: str, *, statuses: Collection[TriggerStatus], manual: bool | None = None
    ) -> TriggerRecord | None:
        """The newest trigger of ``policy`` in ``statuses`` (and, if given, of that manual-ness)."""
        ...

    def list_triggers(
        self,
        *,
        policy: str | None = None,
        model: str | None = None,
        statuses: Collection[TriggerStatus] | None = None,
        limit: int = 200,
    ) -> list[TriggerRecord]:
        """Newest first."""
        ...

    def claim_triggers(self, owner: str, now: datetime, limit: int = 20) -> list[TriggerRecord]:
        """Lease unfinished triggers due at ``now`` (each for its ``lease_s``); mark them firing."""
        ...

    def save_trigger(
        self,
        trigger_id: int,
        *,
        owner: str,
        expect_revision: int,
        status: TriggerStatus,
        actions: list[dict[str, Any]],
        attempts: int,
        last_error: str | None,
        next_attempt_at: datetime,
        now: datetime,
        release_lease: bool,
        lease_until: datetime | None = None,
    ) -> TriggerRecord:
        """Write progress if the revision and our lease still hold; StateError otherwise."""
        ...


__all__ = ["RetrainingStore"]
