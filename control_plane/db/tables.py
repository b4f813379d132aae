"""SQL tables for every record of :mod:`control_plane.store.records`.

Theory of operation: one SQLModel table class per record, on a dedicated
:data:`metadata` (not the global ``SQLModel.metadata``) with a naming
convention, so every constraint has a stable name that the migrations in
``migrations/versions`` repeat verbatim and that error mapping can recognise.
Only the SQL adapter (:mod:`control_plane.store.sql`) and the migrations use
these classes; services see records. The column types live in
:mod:`._table_types` and the drift loop's tables in :mod:`._drift_tables`;
this module re-exports both, so it names the whole schema.

Invariants:

* Times are stored as ``TIMESTAMP WITH TIME ZONE``. :class:`UtcDateTime`
  refuses naive values and always returns aware UTC datetimes. On SQLite, which
  has no time zone type, values are stored as naive UTC text of fixed width, so
  that comparisons in SQL (``expires_at > :now``) stay correct.
* Enums are stored as their string values (:class:`EnumText`), never as a
  database enum type, so adding a state needs no schema change.
* JSON fields are ``JSON`` columns; bytes are ``LargeBinary``.
* The migrations create exactly this schema; ``tests/contract/test_migrations.py``
  compares them on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlmodel import Field

from control_plane.db._drift_tables import (
    BIG_ID,
    CaptureRow,
    DriftPolicyRow,
    DriftRollupRow,
    DriftWindowRow,
    RetrainingTriggerRow,
    TelemetryRollupRow,
    TelemetryWindowRow,
)
from control_plane.db._table_types import (
    NAMING_CONVENTION,
    EnumText,
    TableBase,
    UtcDateTime,
    metadata,
)
from control_plane.store.records import ReleaseState, Role, VersionState
from control_plane.store.rollout_records import TargetStatus
from fleetcore.protocol import UpdateState


class ArtifactRow(TableBase, table=True):
    __tablename__ = "artifact"

    sha256: str = Field(sa_type=String, primary_key=True)
    length: int = Field(sa_type=BigInteger)
    kind: str = Field(sa_type=String)
    created_at: datetime = Field(sa_type=UtcDateTime)


class ModelVersionRow(TableBase, table=True):
    __tablename__ = "model_version"
    __table_args__ = (UniqueConstraint("model", "version"),)

    id: int | None = Field(default=None, sa_type=Integer, primary_key=True)
    model: str = Field(sa_type=String)
    version: str = Field(sa_type=String)
    state: VersionState = Field(sa_type=EnumText(VersionState))
    artifact_sha256: str = Field(sa_type=String, foreign_key="artifact.sha256", index=True)
    format: str = Field(sa_type=String)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    created_by: str = Field(sa_type=String)
    parent_id: int | None = Field(default=None, sa_type=Integer, foreign_key="model_version.id")
    quantization: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    io_schema: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    validation: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    reasons: list[str] = Field(default_factory=list, sa_type=JSON)
    drift_reference_sha256: str | None = Field(
        default=None, sa_type=String, foreign_key="artifact.sha256"
    )
    provenance: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class ReleaseRow(TableBase, table=True):
    __tablename__ = "release"
    __table_args__ = (UniqueConstraint("model", "counter"), UniqueConstraint("version_id"))

    id: int | None = Field(default=None, sa_type=Integer, primary_key=True)
    model: str = Field(sa_type=String)
    counter: int = Field(sa_type=Integer)
    version_id: int = Field(sa_type=Integer, foreign_key="model_version.id")
    state: ReleaseState = Field(sa_type=EnumText(ReleaseState))
    manifest: bytes = Field(sa_type=LargeBinary)
    manifest_sha256: str = Field(sa_type=String)
    created_at: datetime = Field(sa_type=UtcDateTime)
    created_by: str = Field(sa_type=String)
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    revoke_reason: str | None = Field(default=None, sa_type=Text)


class RevocationRow(TableBase, table=True):
    __tablename__ = "revocation"
    __table_args__ = (UniqueConstraint("model", "sha256"),)

    id: int | None = Field(default=None, sa_type=Integer, primary_key=True)
    sha256: str = Field(sa_type=String, index=True)
    model: str = Field(sa_type=String)
    reason: str = Field(sa_type=Text)
    created_at: datetime = Field(sa_type=UtcDateTime)
    created_by: str = Field(sa_type=String)


class ApiTokenRow(TableBase, table=True):
    __tablename__ = "api_token"

    id: int | None = Field(default=None, sa_type=Integer, primary_key=True)
    name: str = Field(sa_type=String, unique=True)
    role: Role = Field(sa_type=EnumText(Role))
    token_hash: str = Field(sa_type=String, unique=True)
    created_at: datetime = Field(sa_type=UtcDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class EnrollTokenRow(TableBase, table=True):
    __tablename__ = "enroll_token"

    id: int | None = Field(default=None, sa_type=Integer, primary_key=True)
    token_hash: str = Field(sa_type=String, unique=True)
    labels: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    max_uses: int = Field(sa_type=Integer)
    uses: int = Field(sa_type=Integer)
    expires_at: datetime = Field(sa_type=UtcDateTime)
    created_at: datetime = Field(sa_type=UtcDateTime)
    created_by: str = Field(sa_type=String)


class AuditEntryRow(TableBase, table=True):
    __tablename__ = "audit_entry"
    __table_args__ = (Index(None, "object_type", "object_id"),)

    id: int | None = Field(default=None, sa_type=Integer, primary_key=True)
    at: datetime = Field(sa_type=UtcDateTime, index=True)
    actor: str = Field(sa_type=String, index=True)
    action: str = Field(sa_type=String)
    object_type: str = Field(sa_type=String)
    object_id: str = Field(sa_type=String)
    change: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class DeviceRow(TableBase, table=True):
    __tablename__ = "device"

    id: str = Field(sa_type=String, primary_key=True)
    hostname: str = Field(sa_type=String)
    public_key: str = Field(sa_type=String)
    keyid: str = Field(sa_type=String, unique=True)
    labels: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    capabilities: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    token_hash: str = Field(sa_type=String, unique=True)
    mqtt_password_hash: str = Field(sa_type=String)
    created_at: datetime = Field(sa_type=UtcDateTime)
    state: UpdateState | None = Field(default=None, sa_type=EnumText(UpdateState), index=True)
    state_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    state_sequence: int | None = Field(default=None, sa_type=Integer)
    target_model: str | None = Field(default=None, sa_type=String)
    target_release: int | None = Field(default=None, sa_type=Integer)
    target_sha256: str | None = Field(default=None, sa_type=String)
    current_model: str | None = Field(default=None, sa_type=String)
    current_release: int | None = Field(default=None, sa_type=Integer)
    current_sha256: str | None = Field(default=None, sa_type=String)
    previous_model: str | None = Field(default=None, sa_type=String)
    previous_release: int | None = Field(default=None, sa_type=Integer)
    previous_sha256: str | None = Field(default=None, sa_type=String)
    last_reason: str | None = Field(default=None, sa_type=String)
    last_message: str | None = Field(default=None, sa_type=Text)
    agent_version: str | None = Field(default=None, sa_type=String)
    desired_sequence: int = Field(default=0, sa_type=Integer)
    last_seq: int = Field(default=0, sa_type=BigInteger)
    last_seen: datetime | None = Field(default=None, sa_type=UtcDateTime)
    online: bool = Field(default=False, sa_type=Boolean)
    malformed_reports: int = Field(default=0, sa_type=Integer)
    decommissioned_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class DeviceAssignmentRow(TableBase, table=True):
    __tablename__ = "device_assignment"
    __table_args__ = (UniqueConstraint("device_id", "sequence"),)

    id: int | None = Field(default=None, sa_type=Integer, primary_key=True)
    device_id: str = Field(sa_type=String, foreign_key="device.id")
    sequence: int = Field(sa_type=Integer)
    model: str = Field(sa_type=String)
    release: int = Field(sa_type=Integer)
    manifest_sha256: str = Field(sa_type=String)
    artifact_sha256: str = Field(sa_type=String)
    envelope: bytes = Field(sa_type=LargeBinary)
    issued_at: datetime = Field(sa_type=UtcDateTime)
    expires_at: datetime = Field(sa_type=UtcDateTime, index=True)
    created_by: str = Field(sa_type=String)
    published_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class DeviceReportRow(TableBase, table=True):
    __tablename__ = "device_report"
    __table_args__ = (UniqueConstraint("device_id", "seq"),)

    id: int | None = Field(default=None, sa_type=Integer, primary_key=True)
    device_id: str = Field(sa_type=String, foreign_key="device.id")
    seq: int = Field(sa_type=BigInteger)
    state: UpdateState = Field(sa_type=EnumText(UpdateState))
    time: datetime = Field(sa_type=UtcDateTime)
    received_at: datetime = Field(sa_type=UtcDateTime)
    transport: str = Field(sa_type=String)
    report: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class RolloutRow(TableBase, table=True):
    __tablename__ = "rollout"

    id: str = Field(sa_type=String, primary_key=True)
    name: str = Field(sa_type=String, unique=True)
    model: str = Field(sa_type=String)
    release: int = Field(sa_type=Integer)
    spec: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    spec_digest: str = Field(sa_type=String)
    phase: str = Field(sa_type=String, index=True)
    state: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    created_at: datetime = Field(sa_type=UtcDateTime)
    created_by: str = Field(sa_type=String)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    revision: int = Field(default=0, sa_type=Integer)
    lease_owner: str | None = Field(default=None, sa_type=String)
    lease_until: datetime | None = Field(default=None, sa_type=UtcDateTime)


class RolloutDeviceRow(TableBase, table=True):
    __tablename__ = "rollout_device"
    __table_args__ = (
        UniqueConstraint("rollout_id", "device_id"),
        Index(None, "rollout_id", "status", "wave"),
    )

    id: int | None = Field(default=None, sa_type=Integer, primary_key=True)
    rollout_id: str = Field(sa_type=String, foreign_key="rollout.id")
    device_id: str = Field(sa_type=String, foreign_key="device.id", index=True)
    wave: int = Field(sa_type=Integer)
    order_key: str = Field(sa_type=String)
    status: TargetStatus = Field(sa_type=EnumText(TargetStatus))
    stratum: str | None = Field(default=None, sa_type=String)
    attempts: int = Field(default=0, sa_type=Integer)
    sequence: int | None = Field(default=None, sa_type=Integer)
    assigned_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    previous_release: int | None = Field(default=None, sa_type=Integer)
    revert_sequence: int | None = Field(default=None, sa_type=Integer)
    reason: str | None = Field(default=None, sa_type=Text)


__all__ = [
    "BIG_ID",
    "NAMING_CONVENTION",
    "ApiTokenRow",
    "ArtifactRow",
    "AuditEntryRow",
    "CaptureRow",
    "DeviceAssignmentRow",
    "DeviceReportRow",
    "DeviceRow",
    "DriftPolicyRow",
    "DriftRollupRow",
    "DriftWindowRow",
    "EnrollTokenRow",
    "EnumText",
    "ModelVersionRow",
    "ReleaseRow",
    "RetrainingTriggerRow",
    "RevocationRow",
    "RolloutDeviceRow",
    "RolloutRow",
    "TableBase",
    "TelemetryRollupRow",
    "TelemetryWindowRow",
    "UtcDateTime",
    "metadata",
]
