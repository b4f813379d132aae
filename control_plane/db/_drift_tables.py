"""Tables of the drift loop: retraining policies and triggers (``0006_retraining``),
telemetry and drift windows, their rollups and data captures (``0005_telemetry``).

Part of the schema of :mod:`control_plane.db.tables`, which re-exports them;
split off by subject to keep each module small.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlmodel import Field

from control_plane.db._table_types import EnumText, TableBase, UtcDateTime
from control_plane.store.retraining_records import TriggerStatus

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


__all__ = [
    "BIG_ID",
    "CaptureRow",
    "DriftPolicyRow",
    "DriftRollupRow",
    "DriftWindowRow",
    "RetrainingTriggerRow",
    "TelemetryRollupRow",
    "TelemetryWindowRow",
]
