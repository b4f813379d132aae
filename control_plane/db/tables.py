"""SQL tables for every record of :mod:`control_plane.store.records`.

Theory of operation: one SQLModel table class per record, on a dedicated
:data:`metadata` (not the global ``SQLModel.metadata``) with a naming
convention, so every constraint has a stable name that the migrations in
``migrations/versions`` repeat verbatim and that error mapping can recognise.
Only the SQL adapter (:mod:`control_plane.store.sql`) and the migrations use
these classes; services see records.

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

from datetime import datetime, timezone
from enum import Enum
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Dialect,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import registry
from sqlalchemy.types import DateTime, TypeDecorator
from sqlmodel import Field, SQLModel

from control_plane.store.records import ReleaseState, Role, VersionState
from control_plane.store.retraining_records import TriggerStatus
from control_plane.store.rollout_records import TargetStatus
from fleetcore.protocol import UpdateState

E = TypeVar("E", bound=Enum)

NAMING_CONVENTION = {
    "pk": "pk_%(table_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}

#: The control plane's schema; Alembic's ``target_metadata``.
metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime in, an aware UTC datetime out, on every database."""

    impl = DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()}: times must be timezone-aware")
        value = value.astimezone(timezone.utc)
        # SQLite stores text: normalise to naive UTC so stored values compare correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class EnumText(TypeDecorator[E], Generic[E]):
    """A string enum stored as its value in a plain string column."""

    impl = String
    cache_ok = True

    def __init__(self, enum_type: type[E]) -> None:
        super().__init__()
        self.enum_type = enum_type

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return str(self.enum_type(value).value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum_type(value)


class TableBase(SQLModel, registry=registry(metadata=metadata)):
    """Base of the control plane's tables; keeps them on :data:`metadata`."""


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
    "NAMING_CONVENTION",
    "ApiTokenRow",
    "ArtifactRow",
    "AuditEntryRow",
    "DeviceAssignmentRow",
    "DeviceReportRow",
    "DeviceRow",
    "EnrollTokenRow",
    "EnumText",
    "ModelVersionRow",
    "ReleaseRow",
    "RevocationRow",
    "RolloutDeviceRow",
    "RolloutRow",
    "TableBase",
    "UtcDateTime",
    "metadata",
]


# -- retraining triggers -----------------------------------------------------------------


class DriftPolicyRow(TableBase, table=True):
    __tablename__ = "drift_policy"

    name: str = Field(sa_type=String, primary_key=True)
    model: str = Field(sa_type=String, index=True)
    cohort: str | None = Field(default=None, sa_type=String)
    spec: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    spec_digest: str = Field(sa_type=String)
    created_at: datetime = Field(sa_type=UtcDateTime)
    created_by: str = Field(sa_type=String)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    revision: int = Field(default=0, sa_type=Integer)
    trigger_count: int = Field(default=0, sa_type=Integer)


class RetrainingTriggerRow(TableBase, table=True):
    __tablename__ = "retraining_trigger"
    __table_args__ = (
        UniqueConstraint("policy", "idempotency_key"),
        Index(None, "policy", "created_at"),
        Index(None, "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, sa_type=Integer, primary_key=True)
    # No foreign key: a deleted policy's triggers stay as history.
    policy: str = Field(sa_type=String)
    idempotency_key: str = Field(sa_type=String)
    model: str = Field(sa_type=String)
    release: int = Field(sa_type=Integer)
    cohort: str | None = Field(default=None, sa_type=String)
    status: TriggerStatus = Field(sa_type=EnumText(TriggerStatus))
    manual: bool = Field(default=False, sa_type=Boolean)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    next_attempt_at: datetime = Field(sa_type=UtcDateTime)
    lease_s: int = Field(sa_type=Integer)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    actions: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    attempts: int = Field(default=0, sa_type=Integer)
    last_error: str | None = Field(default=None, sa_type=Text)
    finished_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    lease_owner: str | None = Field(default=None, sa_type=String)
    lease_until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    revision: int = Field(default=0, sa_type=Integer)


__all__ += ["DriftPolicyRow", "RetrainingTriggerRow"]


# -- telemetry, drift summaries and data captures (revision 0005_telemetry) -------------------
# Raw windows have no foreign key to ``device``: ingestion checks the device first,
# and a batch write must never fail as a whole over one row (the MQTT consumer
# would retry it forever). Devices are decommissioned, never deleted.

#: 64-bit ids on PostgreSQL (windows arrive by the million); SQLite's INTEGER
#: PRIMARY KEY already is 64-bit, and only that spelling assigns ids.
BIG_ID = BigInteger().with_variant(Integer(), "sqlite")


class TelemetryWindowRow(TableBase, table=True):
    __tablename__ = "telemetry_window"
    __table_args__ = (
        UniqueConstraint("device_id", "seq"),
        Index(None, "model", "release", "window_start"),
        Index(None, "window_start"),
    )

    id: int | None = Field(default=None, sa_type=BIG_ID, primary_key=True)
    device_id: str = Field(sa_type=String)
    seq: int = Field(sa_type=BigInteger)
    time: datetime = Field(sa_type=UtcDateTime)
    window_start: datetime = Field(sa_type=UtcDateTime)
    window_s: int = Field(sa_type=Integer)
    model: str | None = Field(default=None, sa_type=String)
    release: int | None = Field(default=None, sa_type=Integer)
    inferences: int = Field(sa_type=BigInteger)
    errors: int = Field(sa_type=BigInteger)
    input_errors: int = Field(sa_type=BigInteger)
    latency: str = Field(sa_type=Text)  # canonical JSON {"<bucket>": count}, non-zero only
    cpu_percent: float | None = Field(default=None, sa_type=Float)
    rss_bytes: int | None = Field(default=None, sa_type=BigInteger)
    disk_free_bytes: int | None = Field(default=None, sa_type=BigInteger)
    received_at: datetime = Field(sa_type=UtcDateTime)


class DriftWindowRow(TableBase, table=True):
    __tablename__ = "drift_window"
    __table_args__ = (
        UniqueConstraint("device_id", "seq"),
        Index(None, "model", "window_start"),
        Index(None, "window_start"),
    )

    id: int | None = Field(default=None, sa_type=BIG_ID, primary_key=True)
    device_id: str = Field(sa_type=String)
    seq: int = Field(sa_type=BigInteger)
    model: str = Field(sa_type=String)
    release: int = Field(sa_type=Integer)
    reference: str = Field(sa_type=String)
    window_start: datetime = Field(sa_type=UtcDateTime)
    window_s: int = Field(sa_type=Integer)
    samples: int = Field(sa_type=BigInteger)
    payload: bytes = Field(sa_type=LargeBinary)
    received_at: datetime = Field(sa_type=UtcDateTime)


class TelemetryRollupRow(TableBase, table=True):
    """Telemetry summed per device, model and release over an hour or a day.

    ``model`` is ``""`` and ``release`` 0 for windows without an active model
    (so the unique key has no NULLs).
    """

    __tablename__ = "telemetry_rollup"
    __table_args__ = (
        # Named: the generated name would pass PostgreSQL's 63-character limit.
        UniqueConstraint(
            "window_s",
            "window_start",
            "device_id",
            "model",
            "release",
            name="uq_telemetry_rollup_key",
        ),
        Index(None, "model", "release", "window_start"),
    )

    id: int | None = Field(default=None, sa_type=BIG_ID, primary_key=True)
    window_s: int = Field(sa_type=Integer)
    window_start: datetime = Field(sa_type=UtcDateTime)
    device_id: str = Field(sa_type=String)
    model: str = Field(sa_type=String)
    release: int = Field(sa_type=Integer)
    windows: int = Field(sa_type=Integer)
    inferences: int = Field(sa_type=BigInteger)
    errors: int = Field(sa_type=BigInteger)
    input_errors: int = Field(sa_type=BigInteger)
    latency: str = Field(sa_type=Text)
    cpu_percent_max: float | None = Field(default=None, sa_type=Float)
    rss_bytes_max: int | None = Field(default=None, sa_type=BigInteger)
    disk_free_bytes_min: int | None = Field(default=None, sa_type=BigInteger)
    updated_at: datetime = Field(sa_type=UtcDateTime)


class DriftRollupRow(TableBase, table=True):
    """Drift summaries merged per device, model, release and reference over an hour or a day."""

    __tablename__ = "drift_rollup"
    __table_args__ = (
        UniqueConstraint(
            "window_s",
            "window_start",
            "device_id",
            "model",
            "release",
            "reference",
            name="uq_drift_rollup_key",
        ),
        Index(None, "model", "window_start"),
    )

    id: int | None = Field(default=None, sa_type=BIG_ID, primary_key=True)
    window_s: int = Field(sa_type=Integer)
    window_start: datetime = Field(sa_type=UtcDateTime)
    device_id: str = Field(sa_type=String)
    model: str = Field(sa_type=String)
    release: int = Field(sa_type=Integer)
    reference: str = Field(sa_type=String)
    windows: int = Field(sa_type=Integer)
    samples: int = Field(sa_type=BigInteger)
    payload: bytes = Field(sa_type=LargeBinary)
    updated_at: datetime = Field(sa_type=UtcDateTime)


class CaptureRow(TableBase, table=True):
    __tablename__ = "capture"
    __table_args__ = (
        UniqueConstraint("device_id", "model", "window_start"),
        Index(None, "model", "received_at"),
    )

    id: int | None = Field(default=None, sa_type=Integer, primary_key=True)
    device_id: str = Field(sa_type=String, foreign_key="device.id")
    model: str = Field(sa_type=String)
    release: int = Field(sa_type=Integer)
    window_start: datetime = Field(sa_type=UtcDateTime)
    rows: int = Field(sa_type=Integer)
    labelled: int = Field(sa_type=Integer)
    artifact_sha256: str = Field(sa_type=String, foreign_key="artifact.sha256")
    received_at: datetime = Field(sa_type=UtcDateTime)


__all__ += [
    "CaptureRow",
    "DriftRollupRow",
    "DriftWindowRow",
    "TelemetryRollupRow",
    "TelemetryWindowRow",
]
