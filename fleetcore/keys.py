"""Ed25519 keys and their key ids.

A public key travels in root metadata as
``{"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": "<hex>"}}``.
Its key id is the SHA-256 of that object's canonical JSON, so a key id always
names exactly one key and cannot be chosen by an attacker for a different key.

Only Ed25519 is accepted: any other key type or scheme is refused with
:class:`UnsupportedAlgorithmError` rather than ignored, so metadata cannot
smuggle in a key the verifier would not understand.

Private keys serialize as PKCS#8 PEM, optionally encrypted with a passphrase
(the caller decides where the bytes and the passphrase come from).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from fleetcore import canonical
from fleetcore.errors import MetadataError, UnsupportedAlgorithmError

KEY_TYPE = "ed25519"
SCHEME = "ed25519"
_PUBLIC_LEN = 32
_SIGNATURE_LEN = 64


@dataclass(frozen=True)
class PublicKey:
    """A verification key as listed in root metadata."""

    public: bytes

    def __post_init__(self) -> None:
        if len(self.public) != _PUBLIC_LEN:
            raise MetadataError(f"ed25519 public key must be {_PUBLIC_LEN} bytes")

    def to_dict(self) -> dict[str, Any]:
        return {"keytype": KEY_TYPE, "scheme": SCHEME, "keyval": {"public": self.public.hex()}}

    @classmethod
    def from_dict(cls, obj: Any) -> PublicKey:
        if not isinstance(obj, dict):
            raise MetadataError("key must be a JSON object")
        keytype, scheme, keyval = obj.get("keytype"), obj.get("scheme"), obj.get("keyval")
        if keytype != KEY_TYPE:
            raise UnsupportedAlgorithmError(f"key type {keytype!r} is not supported")
        if scheme != SCHEME:
            raise UnsupportedAlgorithmError(f"signature scheme {scheme!r} is not supported")
        if not isinstance(keyval, dict) or not isinstance(keyval.get("public"), str):
            raise MetadataError("key needs keyval.public as a hex string")
        try:
            public = bytes.fromhex(keyval["public"])
        except ValueError as exc:
            raise MetadataError("key's public value is not hex") from exc
        return cls(public)

    @property
    def keyid(self) -> str:
        return hashlib.sha256(canonical.encode(self.to_dict())).hexdigest()

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True when ``signature`` is a valid signature of ``data`` by this key."""
        if len(signature) != _SIGNATURE_LEN:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True


class PrivateKey:
    """An Ed25519 signing key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_key = PublicKey(raw)

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(Ed25519PrivateKey.generate())

    @property
    def keyid(self) -> str:
        return self.public_key.keyid

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def to_pem(self, passphrase: bytes | None = None) -> bytes:
        """PKCS#8 PEM, encrypted with the best available cipher when given a passphrase."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    @classmethod
    def from_pem(cls, data: bytes, passphrase: bytes | None = None) -> PrivateKey:
        """Load a PEM private key.

        Raises:
            MetadataError: the PEM is malformed, encrypted without a passphrase
                given, or the passphrase is wrong.
            UnsupportedAlgorithmError: the key is not Ed25519.
        """
        try:
            key = serialization.load_pem_private_key(data, password=passphrase or None)
        except TypeError as exc:
            if passphrase:
                raise MetadataError(
                    "private key is not encrypted but a passphrase was given"
                ) from exc
            raise MetadataError("private key is encrypted and no passphrase was given") from exc
        except UnsupportedAlgorithm as exc:
            raise UnsupportedAlgorithmError("private key uses an unsupported algorithm") from exc
        except ValueError as exc:
            raise MetadataError(
                "private key could not be read (bad PEM or wrong passphrase)"
            ) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise UnsupportedAlgorithmError("private key is not an ed25519 key")
        return cls(key)

    @staticmethod
    def is_encrypted_pem(data: bytes) -> bool:
        return b"ENCRYPTED PRIVATE KEY" in data[:64]


__all__ = ["KEY_TYPE", "SCHEME", "PrivateKey", "PublicKey"]
