"""Domain records the store keeps: plain dataclasses, no ORM types.

Services and routes work with these; only the SQL adapter knows tables.
Times are timezone-aware UTC. ``id`` is ``0`` on a record not yet stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from fleetcore.protocol import Installed, UpdateState


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


@dataclass
class DeviceRecord:
    """An enrolled device: its identity, credentials (as hashes) and last known state.

    ``state`` and the ``target``/``current``/``previous`` releases come from the
    newest status report (highest ``last_seq``); ``desired_sequence`` is the
    highest assignment sequence the director has allocated for the device.
    """

    id: str  # "dev-" + 20 lower-case base32 characters; also the MQTT username
    hostname: str
    public_key: str  # hex of the device's Ed25519 public key
    keyid: str
    labels: dict[str, str]
    capabilities: dict[str, Any]  # fleetcore.protocol.Capabilities.to_dict()
    token_hash: str  # sha256 hex of the device token
    mqtt_password_hash: str  # Mosquitto "$7$" PBKDF2-SHA512, as in the password file
    created_at: datetime
    state: UpdateState | None = None
    state_at: datetime | None = None  # the device's time of that report
    state_sequence: int | None = None  # the assignment sequence that report is about
    target_model: str | None = None
    target_release: int | None = None
    target_sha256: str | None = None
    current_model: str | None = None
    current_release: int | None = None
    current_sha256: str | None = None
    previous_model: str | None = None
    previous_release: int | None = None
    previous_sha256: str | None = None
    last_reason: str | None = None
    last_message: str | None = None
    agent_version: str | None = None
    desired_sequence: int = 0
    last_seq: int = 0
    last_seen: datetime | None = None
    online: bool = False
    malformed_reports: int = 0
    decommissioned_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.decommissioned_at is None

    def installed(self, which: str) -> Installed | None:
        """``target``, ``current`` or ``previous`` as a release, or ``None``."""
        model = getattr(self, f"{which}_model")
        release = getattr(self, f"{which}_release")
        sha256 = getattr(self, f"{which}_sha256")
        if model is None or release is None or sha256 is None:
            return None
        return Installed(model, release, sha256)


@dataclass
class DeviceAssignmentRecord:
    """One signed director assignment; the device's newest one is its desired state."""

    device_id: str
    sequence: int
    model: str
    release: int
    manifest_sha256: str
    artifact_sha256: str
    envelope: bytes  # the signed assignment, as devices receive it
    issued_at: datetime
    expires_at: datetime
    created_by: str
    published_at: datetime | None = None  # when the broker acknowledged it (MQTT)
    id: int = 0


@dataclass
class DeviceReportRecord:
    """One status report as received; ``(device_id, seq)`` is stored once."""

    device_id: str
    seq: int
    state: UpdateState
    time: datetime  # the device's clock
    received_at: datetime  # the control plane's clock
    transport: str  # "mqtt" | "http"
    report: dict[str, Any]  # StatusReport.to_dict()
    id: int = 0


@dataclass(frozen=True)
class ReportsResult:
    """What a batch of reports did: new ones stored, repeats ignored, newest seq kept."""

    accepted: int
    duplicates: int
    last_seq: int


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
    "VersionState",
]
