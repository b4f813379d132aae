"""An in-memory repository simulator: keys per role and signed metadata on demand.

Tests describe what they want (which keys sign, which fields are changed) and
get envelope bytes back, exactly as a device would receive them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from fleetcore.envelope import Envelope
from fleetcore.keys import PrivateKey
from fleetcore.metadata import (
    ArtifactInfo,
    Assignment,
    Compatibility,
    ReleaseManifest,
    Role,
    Root,
    SmokeTests,
    SmokeVector,
)
from fleetcore.tensors import TensorSpec
from fleetcore.trust import manifest_digest

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
DEVICE = "dev-001"
ARTIFACT = b"model bytes " * 100

Mutate = Callable[[dict[str, Any]], None]


def compat() -> Compatibility:
    return Compatibility(
        runtime="onnxruntime",
        inputs=(TensorSpec("features", "float32", (None, 4)),),
        outputs=(TensorSpec("probabilities", "float32", (None, 3)),),
        opset=17,
    )


@dataclass
class RepoSim:
    """Keys and thresholds for each role, plus helpers that sign metadata."""

    keys: dict[str, list[PrivateKey]] = field(default_factory=dict)
    thresholds: dict[str, int] = field(default_factory=dict)
    root_version: int = 1
    sequence: int = 0

    @classmethod
    def create(
        cls,
        root: int = 1,
        release: int = 1,
        director: int = 1,
        *,
        root_threshold: int = 1,
        release_threshold: int = 1,
    ) -> RepoSim:
        sim = cls()
        for role, count, threshold in (
            ("root", root, root_threshold),
            ("release", release, release_threshold),
            ("director", director, 1),
        ):
            sim.keys[role] = [PrivateKey.generate() for _ in range(count)]
            sim.thresholds[role] = threshold
        return sim

    def root(self, *, version: int | None = None, expires: datetime | None = None) -> Root:
        keys = {k.keyid: k.public_key for ks in self.keys.values() for k in ks}
        roles = {
            r: Role(tuple(k.keyid for k in ks), self.thresholds[r]) for r, ks in self.keys.items()
        }
        return Root(
            version or self.root_version, T0, expires or T0 + timedelta(days=365), keys, roles
        )

    @staticmethod
    def sign(
        signed: dict[str, Any], signers: Iterable[PrivateKey], mutate: Mutate | None = None
    ) -> bytes:
        signed = copy.deepcopy(signed)
        if mutate:
            mutate(signed)
        envelope = Envelope(signed)
        for key in signers:
            envelope.sign(key)
        return envelope.to_bytes()

    def root_bytes(self, signers: Iterable[PrivateKey] | None = None, **kwargs: Any) -> bytes:
        return self.sign(
            self.root(**kwargs).to_dict(), self.keys["root"] if signers is None else signers
        )

    def manifest(
        self,
        *,
        model: str = "sensor",
        release: int = 1,
        data: bytes = ARTIFACT,
        floor: int = 0,
        revoked: tuple[str, ...] = (),
        issued: datetime = T0,
        expires: datetime | None = None,
    ) -> ReleaseManifest:
        import hashlib

        x = np.zeros((1, 4), dtype=np.float32)
        y = np.full((1, 3), 1 / 3, dtype=np.float32)
        return ReleaseManifest(
            model=model,
            release=release,
            version=f"{release}.0",
            issued=issued,
            expires=expires or issued + timedelta(days=90),
            artifact=ArtifactInfo(len(data), hashlib.sha256(data).hexdigest(), name="model.onnx"),
            format="onnx",
            compatibility=compat(),
            smoke_tests=SmokeTests(
                (SmokeVector({"features": x}, {"probabilities": y}),), 1e-3, 0.0
            ),
            floor=floor,
            revoked=revoked,
        )

    def release_bytes(
        self,
        manifest: ReleaseManifest | None = None,
        *,
        signers: Iterable[PrivateKey] | None = None,
        mutate: Mutate | None = None,
    ) -> bytes:
        manifest = manifest or self.manifest()
        return self.sign(
            manifest.to_dict(), self.keys["release"] if signers is None else signers, mutate
        )

    def assignment(
        self,
        manifest: ReleaseManifest,
        *,
        device: str = DEVICE,
        sequence: int | None = None,
        issued: datetime = T0,
        expires: datetime | None = None,
        revoked: tuple[str, ...] = (),
    ) -> Assignment:
        if sequence is None:
            self.sequence += 1
            sequence = self.sequence
        return Assignment(
            device=device,
            sequence=sequence,
            issued=issued,
            expires=expires or issued + timedelta(days=7),
            model=manifest.model,
            release=manifest.release,
            manifest_sha256=manifest_digest(manifest.to_dict()),
            artifact=ArtifactInfo(manifest.artifact.length, manifest.artifact.sha256),
            format=manifest.format,
            compatibility=manifest.compatibility,
            revoked=revoked,
        )

    def assignment_bytes(
        self,
        assignment: Assignment,
        *,
        signers: Iterable[PrivateKey] | None = None,
        mutate: Mutate | None = None,
    ) -> bytes:
        return self.sign(
            assignment.to_dict(), self.keys["director"] if signers is None else signers, mutate
        )
