"""Request and response bodies of the HTTP API (``*Create`` in, ``*Public`` out).

Public models are built from store records with ``from_record``; secrets never
appear in them (token creation responses carry the secret exactly once).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from control_plane.store import (
    ModelVersionRecord,
    ReleaseRecord,
    Role,
)

SHA256 = r"^[0-9a-f]{64}$"
NAME = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
#: Deepest JSON nesting accepted in a request (manifests must parse back: fleetcore
#: allows 32 levels, and provenance sits a few levels down).
MAX_DEPTH = 16
#: Release counters fit a 32-bit integer column on every database.
MAX_COUNTER = 2**31 - 1


def _check_values(value: Any) -> None:
    # JSON may carry lone UTF-16 surrogates ("\ud800"): valid JSON, not valid
    # Unicode text, and unstorable. Refuse them here instead of failing later.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"nesting deeper than {MAX_DEPTH} levels")
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError("text must be valid Unicode (no lone surrogates)") from exc
            if "\x00" in item:
                raise ValueError("text must not contain NUL characters")
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError("numbers must be finite (no NaN or Infinity)")
        elif isinstance(item, dict):
            stack.extend((key, depth + 1) for key in item)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


_R = TypeVar("_R", bound="RecordModel")


class RecordModel(BaseModel):
    """A response model read from the same-named attributes of a store record."""

    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def from_record(cls: type[_R], record: object) -> _R:
        return cls.model_validate(record)


class RequestModel(BaseModel):
    """Base of request bodies: text must be storable Unicode, numbers finite."""

    @model_validator(mode="before")
    @classmethod
    def _valid_text(cls, data: Any) -> Any:
        _check_values(data)
        return data


class KindDocument(RequestModel):
    """A ``kind``/``metadata``/``spec`` document as applied from YAML; the service checks it."""

    apiVersion: str | None = None  # noqa: N815 - the document's own field name
    kind: str | None = None
    metadata: dict[str, Any]
    spec: dict[str, Any]

    def document(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)

    def named(self, name: str) -> dict[str, Any]:
        """The document applied under ``name``: the URL's name wins over ``metadata.name``."""
        document = self.document()
        document["metadata"] = {**document.get("metadata", {}), "name": name}
        return document


class VersionCreate(RequestModel):
    version: str = Field(pattern=NAME, examples=["1.2.0"])
    artifact_sha256: str = Field(pattern=SHA256, description="uploaded with POST /v1/artifacts")
    parent_version: str | None = Field(None, pattern=NAME, description="float parent, if any")
    eval_data_sha256: str | None = Field(None, pattern=SHA256, description=".npz with x and y")
    reference_data_sha256: str | None = Field(
        None, pattern=SHA256, description=".npz with x (and y): builds the drift reference"
    )
    quantization: dict[str, Any] = Field(default_factory=dict, description="the recipe used")
    provenance: dict[str, Any] = Field(
        default_factory=dict, description="training-data digest, code version, ..."
    )


class ModelVersionPublic(BaseModel):
    model: str
    version: str
    state: str
    format: str
    artifact_sha256: str
    parent_version: str | None
    quantization: dict[str, Any]
    io_schema: dict[str, Any]
    validation: dict[str, Any]
    reasons: list[str]
    drift_reference_sha256: str | None
    provenance: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    created_by: str

    @classmethod
    def from_record(cls, r: ModelVersionRecord, parent: str | None) -> ModelVersionPublic:
        validation = {k: v for k, v in r.validation.items() if k != "smoke_tests"}
        return cls(
            model=r.model,
            version=r.version,
            state=r.state.value,
            format=r.format,
            artifact_sha256=r.artifact_sha256,
            parent_version=parent,
            quantization=r.quantization,
            io_schema=r.io_schema,
            validation=validation,
            reasons=r.reasons,
            drift_reference_sha256=r.drift_reference_sha256,
            provenance=r.provenance,
            created_at=r.created_at,
            updated_at=r.updated_at,
            created_by=r.created_by,
        )


class ModelSummary(BaseModel):
    name: str
    versions: int
    latest_version: str
    released: list[int]


class ReleaseCreate(RequestModel):
    model: str = Field(pattern=NAME)
    version: str = Field(pattern=NAME)
    offline: bool = Field(False, description="leave unsigned for an offline release key")
    expires_in_days: int | None = Field(None, ge=1, le=3650)
    floor: int = Field(0, ge=0, description="refuse releases of this model below this counter")


class ReleasePublic(BaseModel):
    model: str
    counter: int
    version: str
    state: str
    sha256: str
    length: int
    manifest_sha256: str
    signatures: int
    expires: str
    provenance: dict[str, Any]
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    revoke_reason: str | None

    @classmethod
    def from_record(
        cls, r: ReleaseRecord, signed: dict[str, Any], signatures: int
    ) -> ReleasePublic:
        return cls(
            model=r.model,
            counter=r.counter,
            version=str(signed["version"]),
            state=r.state.value,
            sha256=signed["artifact"]["hashes"]["sha256"],
            length=int(signed["artifact"]["length"]),
            manifest_sha256=r.manifest_sha256,
            signatures=signatures,
            expires=str(signed["expires"]),
            provenance=dict(signed.get("provenance", {})),
            created_at=r.created_at,
            created_by=r.created_by,
            revoked_at=r.revoked_at,
            revoke_reason=r.revoke_reason,
        )


class SignatureIn(RequestModel):
    keyid: str = Field(pattern=SHA256)
    sig: str = Field(pattern=r"^[0-9a-f]{128}$")


class SignaturesIn(RequestModel):
    signatures: list[SignatureIn] = Field(min_length=1, max_length=32)


class RevokeIn(RequestModel):
    reason: str = Field(min_length=1, max_length=500)


class TokenCreate(RequestModel):
    name: str = Field(pattern=NAME)
    role: Role
    expires_in_days: int | None = Field(None, ge=1, le=3650)


class TokenPublic(RecordModel):
    name: str
    role: Role
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="the secret; shown once, store it now")


class EnrollTokenCreate(RequestModel):
    labels: dict[str, str] = Field(default_factory=dict, max_length=32)
    max_uses: int = Field(1, ge=1, le=1_000_000)
    expires_in_hours: int = Field(24, ge=1, le=24 * 365)


class EnrollTokenPublic(RecordModel):
    id: int
    labels: dict[str, str]
    max_uses: int
    uses: int
    expires_at: datetime
    created_at: datetime
    created_by: str


class EnrollTokenCreated(EnrollTokenPublic):
    token: str = Field(description="the secret; shown once")


class AuditPublic(RecordModel):
    id: int
    at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str
    change: dict[str, Any]


class WhoAmI(BaseModel):
    name: str
    role: Role


class Health(BaseModel):
    status: str
    version: str
