"""Persistence: the :class:`Store` port, its records, and the SQL adapter."""

from control_plane.store.port import Store
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
    Role,
    VersionState,
)
from control_plane.store.retraining_port import RetrainingStore
from control_plane.store.retraining_records import DriftPolicyRecord, TriggerRecord, TriggerStatus
from control_plane.store.telemetry_records import (
    BatchResult,
    CaptureRecord,
    DriftWindow,
    DriftWindowRecord,
    RollupResult,
    TelemetryAggregate,
    TelemetryWindowRecord,
)

__all__ = [
    "ApiTokenRecord",
    "ArtifactRecord",
    "AuditRecord",
    "BatchResult",
    "CaptureRecord",
    "DeviceAssignmentRecord",
    "DeviceRecord",
    "DeviceReportRecord",
    "DriftPolicyRecord",
    "DriftWindow",
    "DriftWindowRecord",
    "EnrollTokenRecord",
    "ModelVersionRecord",
    "ReleaseRecord",
    "ReleaseState",
    "ReportsResult",
    "RetrainingStore",
    "RevocationRecord",
    "Role",
    "RollupResult",
    "Store",
    "TelemetryAggregate",
    "TelemetryWindowRecord",
    "TriggerRecord",
    "TriggerStatus",
    "VersionState",
]
