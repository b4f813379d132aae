"""The storage port: everything the control plane persists, behind one interface.

Theory of operation: services depend on :class:`Store`, never on SQL. The SQL
adapter (:mod:`control_plane.store.sql`) implements it on SQLite and
PostgreSQL, and one contract suite (``tests/contract/test_store.py``) runs
against both.

Atomicity: each method is its own transaction. A service that must change
several things at once (a release row *and* its audit entry) does so inside
``with store.transaction() as tx:``; ``tx`` is a :class:`Store` whose writes
commit together when the block ends and roll back if it raises, so a failed
operation leaves nothing half-written.

Errors: uniqueness violations raise :class:`~control_plane.errors.ConflictError`;
updates of a missing id raise :class:`~control_plane.errors.NotFoundError`.
Lookups return ``None`` rather than raising.

Devices: assignment sequences are allocated by one conditional UPDATE of the
device row, so two concurrent assignments never share a sequence; status
reports are stored once per ``(device, seq)`` and only a report newer than the
device's ``last_seq`` moves its state.
"""

from __future__ import annotations

from collections.abc import Collection
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from control_plane.store.records import (
    ApiTokenRecord,
    ArtifactRecord,
    AuditRecord,
    DeviceAssignmentRecord,
    DeviceRecord,
    DeviceReportRecord,
    EnrollTokenRecord,
    ModelVersionRecord,
    ReleaseRecord,
    ReleaseState,
    ReportsResult,
    RevocationRecord,
    VersionState,
)
from control_plane.store.rollout_port import RolloutStore
from control_plane.store.telemetry_port import TelemetryStore
from fleetcore.protocol import UpdateState


class Store(RolloutStore, TelemetryStore, Protocol):
    def transaction(self) -> AbstractContextManager[Store]:
        """A store whose writes commit together at the end of the block."""
        ...

    # -- artifacts -------------------------------------------------------------
    def add_artifact(self, record: ArtifactRecord) -> ArtifactRecord:
        """Idempotent: returns the existing record when the sha256 is known."""
        ...

    def get_artifact(self, sha256: str) -> ArtifactRecord | None: ...

    # -- model versions ----------------------------------------------------------
    def create_version(self, record: ModelVersionRecord) -> ModelVersionRecord:
        """Insert; ConflictError if (model, version) exists. Returns it with its id."""
        ...

    def get_version(self, model: str, version: str) -> ModelVersionRecord | None: ...

    def get_version_by_id(self, version_id: int) -> ModelVersionRecord | None: ...

    def list_versions(self, model: str | None = None) -> list[ModelVersionRecord]:
        """Oldest first."""
        ...

    def list_models(self) -> list[str]:
        """Distinct model names, sorted."""
        ...

    def update_version(
        self,
        version_id: int,
        *,
        state: VersionState | None = None,
        validation: dict[str, Any] | None = None,
        reasons: list[str] | None = None,
        io_schema: dict[str, Any] | None = None,
        drift_reference_sha256: str | None = None,
        updated_at: datetime,
        expect_state: VersionState | None = None,
    ) -> ModelVersionRecord:
        """Change the given fields (``None`` leaves a field as it is).

        With ``expect_state``, change nothing and raise StateError unless the
        version is in that state at the moment of writing (compare-and-set).
        """
        ...

    # -- releases ---------------------------------------------------------------
    def next_release_counter(self, model: str) -> int:
        """One more than the highest counter of ``model`` (1 for a new model)."""
        ...

    def create_release(self, record: ReleaseRecord) -> ReleaseRecord:
        """ConflictError if (model, counter) exists or the version already has a release."""
        ...

    def get_release(self, model: str, counter: int) -> ReleaseRecord | None: ...

    def get_release_for_version(self, version_id: int) -> ReleaseRecord | None: ...

    def list_releases(self, model: str | None = None) -> list[ReleaseRecord]:
        """By model, then counter."""
        ...

    def update_release(
        self,
        release_id: int,
        *,
        state: ReleaseState | None = None,
        manifest: bytes | None = None,
        revoked_at: datetime | None = None,
        revoke_reason: str | None = None,
        expect_state: ReleaseState | None = None,
        expect_manifest: bytes | None = None,
    ) -> ReleaseRecord:
        """Change the given fields; with ``expect_*``, only if the release still
        has that state and those manifest bytes (else StateError, nothing changed)."""
        ...

    # -- revocations ------------------------------------------------------------
    def add_revocation(self, record: RevocationRecord) -> RevocationRecord:
        """Idempotent per (model, sha256)."""
        ...

    def list_revocations(self, model: str | None = None) -> list[RevocationRecord]: ...

    # -- operator API tokens ---------------------------------------------------
    def add_api_token(self, record: ApiTokenRecord) -> ApiTokenRecord:
        """ConflictError if the name or the hash exists."""
        ...

    def find_api_token(self, token_hash: str) -> ApiTokenRecord | None: ...

    def list_api_tokens(self) -> list[ApiTokenRecord]: ...

    def update_api_token(
        self,
        token_id: int,
        *,
        revoked_at: datetime | None = None,
        last_used_at: datetime | None = None,
    ) -> ApiTokenRecord: ...

    def count_api_tokens(self) -> int: ...

    # -- device enrollment tokens ----------------------------------------------
    def add_enroll_token(self, record: EnrollTokenRecord) -> EnrollTokenRecord: ...

    def list_enroll_tokens(self) -> list[EnrollTokenRecord]: ...

    def find_enroll_token(self, token_hash: str) -> EnrollTokenRecord | None: ...

    def use_enroll_token(self, token_id: int, now: datetime) -> EnrollTokenRecord:
        """Atomically count one use; StateError if used up or expired."""
        ...

    # -- devices ------------------------------------------------------------------
    def add_device(self, record: DeviceRecord) -> DeviceRecord:
        """ConflictError if the id, the public key or the token hash is already stored."""
        ...

    def get_device(self, device_id: str) -> DeviceRecord | None: ...

    def find_device_by_token(self, token_hash: str) -> DeviceRecord | None: ...

    def list_devices(
        self,
        *,
        labels: dict[str, str] | None = None,
        state: UpdateState | None = None,
        include_decommissioned: bool = False,
        after: str | None = None,
        limit: int = 1000,
    ) -> list[DeviceRecord]:
        """By id; ``labels`` must all match; ``after`` pages on from a device id."""
        ...

    def update_device_labels(self, device_id: str, labels: dict[str, str]) -> DeviceRecord:
        """Replace the labels; NotFoundError if missing, StateError if decommissioned."""
        ...

    def decommission_device(self, device_id: str, now: datetime) -> DeviceRecord:
        """Mark the device gone (credentials void); StateError if it already is."""
        ...

    def set_presence(self, device_id: str, online: bool, seen_at: datetime | None) -> DeviceRecord:
        """Record online/offline and, unless ``seen_at`` is None, that the device was seen then."""
        ...

    def touch_device(self, device_id: str, seen_at: datetime) -> None:
        """Record that the device was seen at ``seen_at`` (never moves ``last_seen`` back).

        No error for a missing or decommissioned device: a sighting is a hint."""
        ...

    def count_malformed_reports(self, device_id: str, count: int) -> DeviceRecord:
        """Add ``count`` refused messages to the device's tally."""
        ...

    def mqtt_accounts(self) -> list[tuple[str, str]]:
        """``(device id, MQTT password hash)`` of every active device, by id."""
        ...

    # -- assignments ----------------------------------------------------------------
    def next_assignment_sequence(self, device_id: str, *, expect_current: int | None = None) -> int:
        """Raise the device's desired sequence by one, atomically, and return it.

        NotFoundError for a missing device, StateError for a decommissioned
        one, and with ``expect_current`` StateError (nothing changed) unless
        the sequence was still that number.
        """
        ...

    def add_assignment(self, record: DeviceAssignmentRecord) -> DeviceAssignmentRecord:
        """ConflictError if the device already has that sequence."""
        ...

    def latest_assignment(self, device_id: str) -> DeviceAssignmentRecord | None:
        """The assignment at the device's desired sequence (its desired state)."""
        ...

    def desired_sequences(self, device_ids: Collection[str]) -> dict[str, int]:
        """Each known device's desired sequence (0: never assigned)."""
        ...

    def assignments_expiring(
        self, before: datetime, *, limit: int = 500
    ) -> list[DeviceAssignmentRecord]:
        """Latest assignments of active devices that expire before ``before``, soonest first."""
        ...

    def unpublished_assignments(self, *, limit: int = 1000) -> list[DeviceAssignmentRecord]:
        """Latest assignments of active devices the broker has not acknowledged."""
        ...

    def mark_assignment_published(self, device_id: str, sequence: int, now: datetime) -> None:
        """Record the broker's acknowledgement (no error if it is gone)."""
        ...

    # -- status reports -----------------------------------------------------------
    def add_reports(
        self, device_id: str, reports: list[DeviceReportRecord], now: datetime
    ) -> ReportsResult:
        """Store each ``(device, seq)`` once; the newest report above ``last_seq`` sets
        the device's state. ``last_seen`` becomes ``now``. NotFoundError for a
        missing device, StateError for a decommissioned one."""
        ...

    def list_reports(self, device_id: str, *, limit: int = 20) -> list[DeviceReportRecord]:
        """Newest (highest seq) first."""
        ...

    # -- audit log --------------------------------------------------------------
    def add_audit(self, record: AuditRecord) -> AuditRecord: ...

    def list_audit(
        self,
        *,
        limit: int = 100,
        actor: str | None = None,
        object_type: str | None = None,
        object_id: str | None = None,
    ) -> list[AuditRecord]:
        """Newest first."""
        ...


__all__ = ["Store"]
