"""The SQL adapter of the :class:`~control_plane.store.port.Store` port (SQLite, PostgreSQL).

Theory of operation: a :class:`SqlStore` made from an engine runs each method
in its own short transaction (one :class:`~sqlalchemy.orm.Session` per call)
and commits it before returning. :meth:`SqlStore.transaction` instead yields a
store bound to one session: every method runs inside that session, each write
inside a SAVEPOINT, so a write that fails (a duplicate, a missing reference)
leaves the transaction usable; the whole block commits at its end and rolls
back if it raises. Write sessions on SQLite take the write lock at BEGIN (see
:mod:`control_plane.db.engine`); PostgreSQL runs at READ COMMITTED.

Invariants:

* Callers see records, never rows (mapping in :mod:`control_plane.store._rows`).
* Duplicates raise :class:`ConflictError` naming what was duplicated; updates
  of a missing id raise :class:`NotFoundError`, and so does a record that refers
  to something not stored (an artifact, a parent version, a model version):
  references are checked before insert, foreign keys back that up.
* ``add_artifact`` and ``add_revocation`` are idempotent even when racing: a
  writer whose insert loses to a concurrent one returns the winner's row.
* ``use_enroll_token`` counts a use with one conditional UPDATE, so two devices
  can never both take the last use of a token.
* A value a column refuses (a naive datetime, an unknown enum value) raises
  :class:`InvalidInputError` and writes nothing.

The device methods (devices, assignments, status reports) live in
:mod:`control_plane.store._device_sql`, the rollout methods in
:mod:`control_plane.store._rollout_sql`; this class inherits both.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlmodel import col

from control_plane.db.tables import (
    ApiTokenRow,
    ArtifactRow,
    AuditEntryRow,
    EnrollTokenRow,
    ModelVersionRow,
    ReleaseRow,
    RevocationRow,
)
from control_plane.errors import InvalidInputError, NotFoundError, StateError
from control_plane.store._device_sql import DeviceSql
from control_plane.store._rollout_sql import RolloutSql
from control_plane.store._rows import (
    insert,
    insert_once,
    require,
    to_record,
    to_row,
)
from control_plane.store._telemetry_sql import TelemetrySql
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


class SqlStore(DeviceSql, RolloutSql, TelemetrySql):
    """A :class:`~control_plane.store.port.Store` on a SQLAlchemy engine."""

    # -- artifacts -----------------------------------------------------------------
    def add_artifact(self, record: ArtifactRecord) -> ArtifactRecord:
        with self._write(f"artifact {record.sha256}") as session:
            row = session.get(ArtifactRow, record.sha256) or insert_once(
                session,
                to_row(ArtifactRow, record),
                lambda: session.get(ArtifactRow, record.sha256, populate_existing=True),
            )
            return to_record(ArtifactRecord, row)

    def get_artifact(self, sha256: str) -> ArtifactRecord | None:
        with self._read() as session:
            row = session.get(ArtifactRow, sha256)
            return None if row is None else to_record(ArtifactRecord, row)

    # -- model versions ----------------------------------------------------------
    def create_version(self, record: ModelVersionRecord) -> ModelVersionRecord:
        name = f"model version {record.model} {record.version}"
        duplicates = {"uq_model_version_model_version": f"{name} already exists"}
        with self._write(name, duplicates) as session:
            require(
                session, ArtifactRow, record.artifact_sha256, f"artifact {record.artifact_sha256}"
            )
            if record.drift_reference_sha256 is not None:
                sha = record.drift_reference_sha256
                require(session, ArtifactRow, sha, f"drift reference artifact {sha}")
            if record.parent_id is not None:
                parent = record.parent_id
                require(session, ModelVersionRow, parent, f"parent model version id {parent}")
            return insert(session, to_row(ModelVersionRow, record), ModelVersionRecord)

    def get_version(self, model: str, version: str) -> ModelVersionRecord | None:
        query = select(ModelVersionRow).where(
            col(ModelVersionRow.model) == model, col(ModelVersionRow.version) == version
        )
        return self._one(query, ModelVersionRecord)

    def get_version_by_id(self, version_id: int) -> ModelVersionRecord | None:
        with self._read() as session:
            row = session.get(ModelVersionRow, version_id)
            return None if row is None else to_record(ModelVersionRecord, row)

    def list_versions(self, model: str | None = None) -> list[ModelVersionRecord]:
        query = select(ModelVersionRow).order_by(
            col(ModelVersionRow.created_at), col(ModelVersionRow.id)
        )
        if model is not None:
            query = query.where(col(ModelVersionRow.model) == model)
        return self._all(query, ModelVersionRecord)

    def list_models(self) -> list[str]:
        query = select(col(ModelVersionRow.model)).distinct().order_by(col(ModelVersionRow.model))
        with self._read() as session:
            return list(session.scalars(query))

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
        with self._write(f"model version id {version_id}") as session:
            require(session, ModelVersionRow, version_id, f"model version id {version_id}")
            if expect_state is not None:
                self._compare_and_set(
                    session,
                    ModelVersionRow,
                    version_id,
                    [col(ModelVersionRow.state) == expect_state],
                    {"updated_at": updated_at},
                    f"model version id {version_id} is no longer {expect_state.value}",
                )
            row = require(session, ModelVersionRow, version_id, f"model version id {version_id}")
            if drift_reference_sha256 is not None:
                sha = drift_reference_sha256
                require(session, ArtifactRow, sha, f"drift reference artifact {sha}")
                row.drift_reference_sha256 = sha
            if state is not None:
                row.state = state
            if validation is not None:
                row.validation = copy.deepcopy(validation)
            if reasons is not None:
                row.reasons = list(reasons)
            if io_schema is not None:
                row.io_schema = copy.deepcopy(io_schema)
            row.updated_at = updated_at
            session.flush()
            return to_record(ModelVersionRecord, row)

    # -- releases -------------------------------------------------------------------
    def next_release_counter(self, model: str) -> int:
        query = select(func.max(col(ReleaseRow.counter))).where(col(ReleaseRow.model) == model)
        with self._read() as session:
            highest = session.scalar(query)
            return 1 if highest is None else int(highest) + 1

    def create_release(self, record: ReleaseRecord) -> ReleaseRecord:
        name = f"release {record.model} #{record.counter}"
        duplicates = {
            "uq_release_model_counter": f"{name} already exists",
            "uq_release_version_id": f"model version id {record.version_id} already has a release",
        }
        with self._write(name, duplicates) as session:
            version = require(
                session, ModelVersionRow, record.version_id, f"model version id {record.version_id}"
            )
            if version.model != record.model:
                raise InvalidInputError(
                    f"{name}: model version id {record.version_id} belongs to {version.model}"
                )
            return insert(session, to_row(ReleaseRow, record), ReleaseRecord)

    def get_release(self, model: str, counter: int) -> ReleaseRecord | None:
        query = select(ReleaseRow).where(
            col(ReleaseRow.model) == model, col(ReleaseRow.counter) == counter
        )
        return self._one(query, ReleaseRecord)

    def get_release_for_version(self, version_id: int) -> ReleaseRecord | None:
        query = select(ReleaseRow).where(col(ReleaseRow.version_id) == version_id)
        return self._one(query, ReleaseRecord)

    def list_releases(self, model: str | None = None) -> list[ReleaseRecord]:
        query = select(ReleaseRow).order_by(col(ReleaseRow.model), col(ReleaseRow.counter))
        if model is not None:
            query = query.where(col(ReleaseRow.model) == model)
        return self._all(query, ReleaseRecord)

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
        with self._write(f"release id {release_id}") as session:
            require(session, ReleaseRow, release_id, f"release id {release_id}")
            conditions = []
            if expect_state is not None:
                conditions.append(col(ReleaseRow.state) == expect_state)
            if expect_manifest is not None:
                conditions.append(col(ReleaseRow.manifest) == bytes(expect_manifest))
            if conditions:
                self._compare_and_set(
                    session,
                    ReleaseRow,
                    release_id,
                    conditions,
                    {"id": release_id},
                    f"release id {release_id} changed meanwhile; read it again and retry",
                )
            row = require(session, ReleaseRow, release_id, f"release id {release_id}")
            if state is not None:
                row.state = state
            if manifest is not None:
                row.manifest = bytes(manifest)
            if revoked_at is not None:
                row.revoked_at = revoked_at
            if revoke_reason is not None:
                row.revoke_reason = revoke_reason
            session.flush()
            return to_record(ReleaseRecord, row)

    # -- revocations --------------------------------------------------------------
    def add_revocation(self, record: RevocationRecord) -> RevocationRecord:
        query = select(RevocationRow).where(
            col(RevocationRow.model) == record.model, col(RevocationRow.sha256) == record.sha256
        )
        with self._write(f"revocation of {record.sha256} for {record.model}") as session:
            row = session.scalars(query).one_or_none() or insert_once(
                session,
                to_row(RevocationRow, record),
                lambda: session.scalars(query.execution_options(populate_existing=True)).first(),
            )
            return to_record(RevocationRecord, row)

    def list_revocations(self, model: str | None = None) -> list[RevocationRecord]:
        query = select(RevocationRow).order_by(col(RevocationRow.created_at), col(RevocationRow.id))
        if model is not None:
            query = query.where(col(RevocationRow.model) == model)
        return self._all(query, RevocationRecord)

    # -- operator API tokens -----------------------------------------------------
    def add_api_token(self, record: ApiTokenRecord) -> ApiTokenRecord:
        duplicates = {
            "uq_api_token_name": f"an API token named {record.name!r} already exists",
            "uq_api_token_token_hash": "an API token with this secret already exists",
        }
        with self._write(f"API token {record.name!r}", duplicates) as session:
            return insert(session, to_row(ApiTokenRow, record), ApiTokenRecord)

    def find_api_token(self, token_hash: str) -> ApiTokenRecord | None:
        query = select(ApiTokenRow).where(col(ApiTokenRow.token_hash) == token_hash)
        return self._one(query, ApiTokenRecord)

    def list_api_tokens(self) -> list[ApiTokenRecord]:
        query = select(ApiTokenRow).order_by(col(ApiTokenRow.id))
        return self._all(query, ApiTokenRecord)

    def update_api_token(
        self,
        token_id: int,
        *,
        revoked_at: datetime | None = None,
        last_used_at: datetime | None = None,
    ) -> ApiTokenRecord:
        with self._write(f"API token id {token_id}") as session:
            row = require(session, ApiTokenRow, token_id, f"API token id {token_id}")
            if revoked_at is not None:
                row.revoked_at = revoked_at
            if last_used_at is not None:
                row.last_used_at = last_used_at
            session.flush()
            return to_record(ApiTokenRecord, row)

    def count_api_tokens(self) -> int:
        with self._read() as session:
            return int(session.scalar(select(func.count()).select_from(ApiTokenRow)) or 0)

    # -- device enrollment tokens ------------------------------------------------
    def add_enroll_token(self, record: EnrollTokenRecord) -> EnrollTokenRecord:
        duplicates = {
            "uq_enroll_token_token_hash": "an enrollment token with this secret already exists"
        }
        with self._write("enrollment token", duplicates) as session:
            return insert(session, to_row(EnrollTokenRow, record), EnrollTokenRecord)

    def list_enroll_tokens(self) -> list[EnrollTokenRecord]:
        query = select(EnrollTokenRow).order_by(col(EnrollTokenRow.id))
        return self._all(query, EnrollTokenRecord)

    def find_enroll_token(self, token_hash: str) -> EnrollTokenRecord | None:
        query = select(EnrollTokenRow).where(col(EnrollTokenRow.token_hash) == token_hash)
        return self._one(query, EnrollTokenRecord)

    def use_enroll_token(self, token_id: int, now: datetime) -> EnrollTokenRecord:
        what = f"enrollment token id {token_id}"
        count_use = (
            update(EnrollTokenRow)
            .where(
                col(EnrollTokenRow.id) == token_id,
                col(EnrollTokenRow.uses) < col(EnrollTokenRow.max_uses),
                col(EnrollTokenRow.expires_at) > now,
            )
            .values(uses=col(EnrollTokenRow.uses) + 1)
            .execution_options(synchronize_session=False)
        )
        with self._write(what) as session:
            counted = cast("CursorResult[Any]", session.execute(count_use)).rowcount == 1
            row = session.get(EnrollTokenRow, token_id, populate_existing=True)
            if row is None:
                raise NotFoundError(f"{what} not found")
            if not counted:
                if row.expires_at <= now:
                    raise StateError(f"{what} expired at {row.expires_at.isoformat()}")
                raise StateError(f"{what} is used up ({row.uses} of {row.max_uses} uses)")
            return to_record(EnrollTokenRecord, row)

    # -- audit log ------------------------------------------------------------------
    def add_audit(self, record: AuditRecord) -> AuditRecord:
        with self._write(f"audit entry {record.action}") as session:
            return insert(session, to_row(AuditEntryRow, record), AuditRecord)

    def list_audit(
        self,
        *,
        limit: int = 100,
        actor: str | None = None,
        object_type: str | None = None,
        object_id: str | None = None,
    ) -> list[AuditRecord]:
        if limit < 1:
            raise InvalidInputError(f"limit must be at least 1, not {limit}")
        query = select(AuditEntryRow)
        for column, value in (
            (AuditEntryRow.actor, actor),
            (AuditEntryRow.object_type, object_type),
            (AuditEntryRow.object_id, object_id),
        ):
            if value is not None:
                query = query.where(col(column) == value)
        query = query.order_by(col(AuditEntryRow.at).desc(), col(AuditEntryRow.id).desc())
        return self._all(query.limit(limit), AuditRecord)


__all__ = ["SqlStore"]
