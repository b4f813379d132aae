"""Persistence: the :class:`Store` port, its records, and the SQL adapter."""

from control_plane.store.port import Store
from control_plane.store.records import (
    ApiTokenRecord,
    ArtifactRecord,
    AuditRecord,
    EnrollTokenRecord,
    ModelVersionRecord,
    ReleaseRecord,
    ReleaseState,
    RevocationRecord,
    Role,
    VersionState,
)

__all__ = [
    "ApiTokenRecord",
    "ArtifactRecord",
    "AuditRecord",
    "EnrollTokenRecord",
    "ModelVersionRecord",
    "ReleaseRecord",
    "ReleaseState",
    "RevocationRecord",
    "Role",
    "Store",
    "VersionState",
]
