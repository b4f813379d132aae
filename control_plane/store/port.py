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
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from control_plane.store.records import (
    ApiTokenRecord,
    ArtifactRecord,
    AuditRecord,
    EnrollTokenRecord,
    ModelVersionRecord,
    ReleaseRecord,
    ReleaseState,
    RevocationRecord,
    VersionState,
)


class Store(Protocol):
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
