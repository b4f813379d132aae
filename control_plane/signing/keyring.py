"""Private keys on disk: written once with mode 0600, optionally encrypted.

Layout of a key directory (``fleetctl keys init DIR``)::

    DIR/keys/<role>-<keyid prefix>.key   PKCS#8 PEM, mode 0600
    DIR/keys/retired/                    keys rotated out, kept for audit
    DIR/root/<N>.root.json               every root version, signed

The passphrase never appears on a command line: it is read from an
environment variable (``EDGEFLEET_KEY_PASSPHRASE`` unless told otherwise).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from fleetcore.errors import EdgefleetError, MetadataError
from fleetcore.keys import PrivateKey

DEFAULT_PASSPHRASE_ENV = "EDGEFLEET_KEY_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
_ROOT_FILE = re.compile(r"(\d+)\.root\.json")


class KeyringError(EdgefleetError):
    """A key directory is missing, incomplete or would be overwritten."""

    check = "keyring"


def passphrase_from_env(var: str) -> bytes | None:
    value = os.environ.get(var, "")
    return value.encode("utf-8") if value else None


def write_private(path: Path, key: PrivateKey, passphrase: bytes | None) -> None:
    """Create ``path`` with mode 0600; never overwrite an existing key."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KeyringError(f"{path} already exists; refusing to overwrite a key") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.to_pem(passphrase))
        handle.flush()
        os.fsync(handle.fileno())


def read_private(path: Path, passphrase_env: str = DEFAULT_PASSPHRASE_ENV) -> PrivateKey:
    data = path.read_bytes()
    passphrase = passphrase_from_env(passphrase_env)
    if PrivateKey.is_encrypted_pem(data) and passphrase is None:
        raise KeyringError(f"{path} is encrypted: set {passphrase_env} to its passphrase")
    try:
        return PrivateKey.from_pem(data, passphrase if PrivateKey.is_encrypted_pem(data) else None)
    except MetadataError as exc:
        raise KeyringError(f"{path}: {exc}") from exc


def write_public_file(path: Path, data: bytes) -> None:
    """Write metadata atomically (temp file, fsync, rename) so readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


@dataclass
class KeyDir:
    """A directory holding role keys and the chain of root versions."""

    path: Path
    passphrase_env: str = DEFAULT_PASSPHRASE_ENV

    @property
    def keys_dir(self) -> Path:
        return self.path / "keys"

    @property
    def root_dir(self) -> Path:
        return self.path / "root"

    def key_path(self, role: str, key: PrivateKey) -> Path:
        return self.keys_dir / f"{role}-{key.keyid[:12]}.key"

    def save_key(self, role: str, key: PrivateKey) -> Path:
        path = self.key_path(role, key)
        write_private(path, key, passphrase_from_env(self.passphrase_env))
        return path

    def load_keys(self) -> dict[str, PrivateKey]:
        """Every active private key in the directory, by key id."""
        if not self.keys_dir.is_dir():
            raise KeyringError(f"{self.keys_dir} does not exist: run 'fleetctl keys init' first")
        keys = {}
        for path in sorted(self.keys_dir.glob("*.key")):
            key = read_private(path, self.passphrase_env)
            keys[key.keyid] = key
        return keys

    def retire(self, key: PrivateKey, role: str) -> Path:
        retired = self.keys_dir / "retired"
        retired.mkdir(mode=0o700, exist_ok=True)
        target = retired / self.key_path(role, key).name
        self.key_path(role, key).replace(target)
        return target

    def root_versions(self) -> list[int]:
        if not self.root_dir.is_dir():
            return []
        found = (_ROOT_FILE.fullmatch(p.name) for p in self.root_dir.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def root_path(self, version: int) -> Path:
        return self.root_dir / f"{version}.root.json"

    def latest_root_path(self) -> Path:
        versions = self.root_versions()
        if not versions:
            raise KeyringError(f"no root metadata in {self.root_dir}: run 'fleetctl keys init'")
        return self.root_path(versions[-1])


__all__ = [
    "DEFAULT_PASSPHRASE_ENV",
    "KeyDir",
    "KeyringError",
    "passphrase_from_env",
    "read_private",
    "write_private",
    "write_public_file",
]
