"""Sign metadata with a test control plane's own keys, to craft what a server never would.

Fault tests need documents that only a compromised, buggy or replaying server
would publish: a release whose smoke vectors do not match its artifact, an
expired assignment, one signed by an unknown key. :class:`Signer` reads the
keys ``fleetctl keys init`` wrote for the test server and signs such
documents, which the test then publishes on the real broker.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from control_plane.releases.keys import ReleaseKeys
from fleetcore.envelope import Envelope
from fleetcore.keys import PrivateKey
from fleetcore.metadata import Assignment, ReleaseManifest
from fleetcore.metadata._fields import ArtifactInfo
from fleetcore.protocol import DesiredState
from fleetcore.tensors import decode_tensor, encode_tensor
from fleetcore.trust import manifest_digest


@dataclass
class Signer:
    keys: ReleaseKeys

    @classmethod
    def for_server(cls, keys_dir: Path) -> Signer:
        return cls(ReleaseKeys(keys_dir, "EDGEFLEET_KEY_PASSPHRASE"))

    def _sign(self, signed: dict[str, Any], keys: list[PrivateKey]) -> bytes:
        envelope = Envelope(signed)
        for key in keys:
            envelope.sign(key)
        return envelope.to_bytes()

    def wrong_smoke_release(self, manifest: bytes, *, release: int) -> bytes:
        """The same artifact re-signed as ``release`` with expected outputs that are off."""
        signed = copy.deepcopy(Envelope.from_bytes(manifest).signed)
        signed["release"] = release
        signed["version"] = f"{signed['version']}-wrong-smoke"
        for vector in signed["smoke_tests"]["vectors"]:
            for name, tensor in vector["expected"].items():
                vector["expected"][name] = encode_tensor(decode_tensor(tensor) + np.float32(0.5))
        ReleaseManifest.from_dict(signed)  # still well-formed
        return self._sign(signed, self.keys.release_signers())

    def assignment(
        self,
        device: str,
        manifest: bytes,
        *,
        sequence: int,
        expires_in: timedelta = timedelta(days=1),
        signers: list[PrivateKey] | None = None,
    ) -> bytes:
        signed = Envelope.from_bytes(manifest).signed
        release = ReleaseManifest.from_dict(signed)
        now = datetime.now(timezone.utc).replace(microsecond=0)
        issued = now - timedelta(days=2) if expires_in < timedelta(0) else now
        assignment = Assignment(
            device=device,
            sequence=sequence,
            issued=issued,
            expires=now + expires_in,
            model=release.model,
            release=release.release,
            manifest_sha256=manifest_digest(signed),
            artifact=ArtifactInfo(release.artifact.length, release.artifact.sha256),
            format=release.format,
            compatibility=release.compatibility,
        )
        keys = self.keys.director_signers() if signers is None else signers
        return self._sign(assignment.to_dict(), keys)

    def desired(self, device: str, manifest: bytes, **options: Any) -> bytes:
        return DesiredState(self.assignment(device, manifest, **options), manifest).encode()


__all__ = ["Signer"]
