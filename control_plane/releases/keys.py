"""The keys the server holds online, read from the key directory.

The release key may live on the server (``fleetctl release create`` signs at
once) or stay offline (``--offline`` and ``attach-signature``). The director key
is always online. Keys are read when needed, not at start-up, so an operator
can add or rotate them without restarting; a missing key is an error naming
what to do, never a silent skip.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from control_plane.errors import NotFoundError, SigningError
from control_plane.signing.keyring import KeyDir, KeyringError
from fleetcore.envelope import Envelope
from fleetcore.errors import EdgefleetError
from fleetcore.keys import PrivateKey
from fleetcore.metadata import Root
from fleetcore.trust import TrustedSet


class ReleaseKeys:
    def __init__(self, path: Path, passphrase_env: str) -> None:
        self.keydir = KeyDir(path, passphrase_env)

    def root_bytes(self, version: int | None = None) -> bytes:
        try:
            path = (
                self.keydir.latest_root_path()
                if version is None
                else self.keydir.root_path(version)
            )
        except KeyringError as exc:
            raise NotFoundError(str(exc)) from exc
        if not path.is_file():
            raise NotFoundError(f"no root metadata version {version}")
        return path.read_bytes()

    def root(self) -> Root:
        return Root.from_dict(Envelope.from_bytes(self.root_bytes()).signed)

    def _signers(self, role: str) -> list[PrivateKey]:
        root = self.root()
        spec = root.role(role)
        try:
            held = self.keydir.load_keys()
        except KeyringError as exc:
            raise SigningError(str(exc)) from exc
        signers = [held[keyid] for keyid in spec.keyids if keyid in held]
        if len(signers) < spec.threshold:
            raise SigningError(
                f"the server holds {len(signers)} of the {spec.threshold} {role} key(s) root "
                f"v{root.version} requires; create the release with --offline and attach "
                "signatures made with 'fleetctl release sign'"
            )
        return signers[: spec.threshold]

    def release_signers(self) -> list[PrivateKey]:
        return self._signers("release")

    def director_signers(self) -> list[PrivateKey]:
        return self._signers("director")

    def verify(self, manifest: bytes, now: datetime) -> None:
        """Refuse to store a manifest that a device would refuse."""
        try:
            TrustedSet(self.root_bytes()).verify_release(manifest, now)
        except EdgefleetError as exc:
            raise SigningError(f"the signed manifest does not verify: {exc.one_line()}") from exc


__all__ = ["ReleaseKeys"]
