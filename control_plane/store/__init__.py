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

__all__ = [
    "ApiTokenRecord",
    "ArtifactRecord",
    "AuditRecord",
    "DeviceAssignmentRecord",
    "DeviceRecord",
    "DeviceReportRecord",
    "EnrollTokenRecord",
    "ModelVersionRecord",
    "ReleaseRecord",
    "ReleaseState",
    "ReportsResult",
    "RevocationRecord",
    "Role",
    "Store",
    "VersionState",
]
