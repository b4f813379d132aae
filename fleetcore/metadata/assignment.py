"""Assignments: the director's per-device instruction to run one release.

An assignment repeats what it points at (model, release counter, manifest
digest, artifact length and hash, format, compatibility) so a device can check
that it matches the release manifest exactly; the director cannot point a
device at bytes the release role did not sign. ``sequence`` increases strictly
per device, which makes replays of old assignments detectable. ``revoked``
lets the online director revoke hashes at once, without the offline release key:
revocation can only deny installs, never enable one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fleetcore.metadata._fields import (
    NAME,
    SHA256_HEX,
    SPEC_VERSION,
    ArtifactInfo,
    Fields,
    format_time,
)
from fleetcore.metadata.release import Compatibility


@dataclass(frozen=True)
class Assignment:
    device: str
    sequence: int
    issued: datetime
    expires: datetime
    model: str
    release: int
    manifest_sha256: str
    artifact: ArtifactInfo
    format: str
    compatibility: Compatibility
    revoked: tuple[str, ...] = ()
    unrecognized: dict[str, Any] = field(default_factory=dict, compare=False)

    type = "assignment"

    @classmethod
    def from_dict(cls, obj: Any) -> Assignment:
        f = Fields(obj, "assignment")
        f.expect("_type", cls.type)
        f.spec_version()
        return cls(
            device=f.string("device", pattern=NAME),
            sequence=f.integer("sequence", minimum=1),
            issued=f.time("issued"),
            expires=f.time("expires"),
            model=f.string("model", pattern=NAME),
            release=f.integer("release", minimum=1),
            manifest_sha256=f.string("manifest_sha256", pattern=SHA256_HEX),
            artifact=ArtifactInfo.from_dict(f.required_object("artifact")),
            format=f.string("format"),
            compatibility=Compatibility.from_dict(f.required_object("compatibility")),
            revoked=f.string_list("revoked", pattern=SHA256_HEX, optional=True),
            unrecognized=f.rest(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.unrecognized,
            "_type": self.type,
            "spec_version": SPEC_VERSION,
            "device": self.device,
            "sequence": self.sequence,
            "issued": format_time(self.issued),
            "expires": format_time(self.expires),
            "model": self.model,
            "release": self.release,
            "manifest_sha256": self.manifest_sha256,
            "artifact": self.artifact.to_dict(),
            "format": self.format,
            "compatibility": self.compatibility.to_dict(),
            "revoked": list(self.revoked),
        }


__all__ = ["Assignment"]
