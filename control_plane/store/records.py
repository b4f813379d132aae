"""Domain records the store keeps: plain dataclasses, no ORM types.

Services and routes work with these; only the SQL adapter knows tables.
Times are timezone-aware UTC. ``id`` is ``0`` on a record not yet stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any


class VersionState(str, Enum):
    DRAFT = "draft"
    VALIDATED = "validated"
    RELEASED = "released"
    REVOKED = "revoked"


class ReleaseState(str, Enum):
    PENDING = "pending"  # manifest built, waiting for offline signatures
    RELEASED = "released"
    REVOKED = "revoked"


class Role(str, Enum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        order = (Role.VIEWER, Role.OPERATOR, Role.ADMIN)
        return order.index(self) >= order.index(needed)


@dataclass
class ArtifactRecord:
    """Content-addressed bytes: a model file, a dataset (.npz) or a drift reference."""

    sha256: str
    length: int
    kind: str  # "onnx" | "tflite" | "npz" | "json"
    created_at: datetime


@dataclass
class ModelVersionRecord:
    model: str
    version: str
    state: VersionState
    artifact_sha256: str
    format: str  # "onnx" | "tflite"
    created_at: datetime
    updated_at: datetime
    created_by: str
    parent_id: int | None = None
    quantization: dict[str, Any] = field(default_factory=dict)
    io_schema: dict[str, Any] = field(default_factory=dict)  # {"inputs": [...], "outputs": [...]}
    validation: dict[str, Any] = field(default_factory=dict)  # the gate's report
    reasons: list[str] = field(default_factory=list)  # why it is still draft
    drift_reference_sha256: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    id: int = 0


@dataclass
class ReleaseRecord:
    model: str
    counter: int
    version_id: int
    state: ReleaseState
    manifest: bytes  # the envelope as served: signed, or unsigned while pending
    manifest_sha256: str  # digest of the canonical ``signed`` part
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    revoke_reason: str | None = None
    id: int = 0


@dataclass
class RevocationRecord:
    sha256: str
    model: str
    reason: str
    created_at: datetime
    created_by: str


@dataclass
class ApiTokenRecord:
    name: str
    role: Role
    token_hash: str  # sha256 hex of the secret; the secret itself is never stored
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    id: int = 0


@dataclass
class EnrollTokenRecord:
    token_hash: str
    labels: dict[str, str]
    max_uses: int
    uses: int
    expires_at: datetime
    created_at: datetime
    created_by: str
    id: int = 0


@dataclass
class AuditRecord:
    at: datetime
    actor: str
    action: str  # e.g. "model.push", "release.create"
    object_type: str
    object_id: str
    change: dict[str, Any] = field(default_factory=dict)
    id: int = 0


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
    "VersionState",
]
