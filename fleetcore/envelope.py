"""Signed envelopes: ``{"signed": {...}, "signatures": [{"keyid", "sig"}, ...]}``.

What a signature covers: the DSSE pre-authentication encoding of a payload
type and the canonical JSON of ``signed``::

    PAE = "DSSEv1" SP len(type) SP type SP len(body) SP body
    type = "application/vnd.edgefleet.<_type>+json"

Binding the ``_type`` into the signed bytes means a signature made for one kind
of document (say an assignment) can never be presented as another (a release
manifest), even if an operator reuses a key across roles.

Counting rule: a threshold is met by *distinct* authorized key ids with a valid
signature. Repeated key ids count once; signatures by unknown keys, malformed
entries and invalid signatures are ignored rather than fatal, so an extra
garbage signature beside valid ones cannot block a legitimate update.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleetcore import canonical
from fleetcore.errors import MetadataError, SignatureError
from fleetcore.keys import PrivateKey, PublicKey

#: Signatures looked at per envelope; bounds the work a hostile document causes.
MAX_SIGNATURES = 32
METADATA_TYPES = ("root", "release", "assignment")


def payload_type(metadata_type: str) -> str:
    return f"application/vnd.edgefleet.{metadata_type}+json"


def pae(ptype: str, body: bytes) -> bytes:
    """DSSE pre-authentication encoding."""
    encoded = ptype.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(encoded), encoded, len(body), body)


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: str  # hex; kept as received so garbage can be carried and ignored


@dataclass
class Envelope:
    """A ``signed`` object and its signatures, before any trust decision."""

    signed: dict[str, Any]
    signatures: list[Signature] = field(default_factory=list)

    @property
    def metadata_type(self) -> str:
        kind = self.signed.get("_type")
        if kind not in METADATA_TYPES:
            raise MetadataError(f"unknown metadata _type {kind!r}")
        return str(kind)

    def signing_input(self) -> bytes:
        return pae(payload_type(self.metadata_type), canonical.encode(self.signed))

    def sign(self, key: PrivateKey) -> None:
        """Add (or replace) this key's signature."""
        sig = key.sign(self.signing_input()).hex()
        self.signatures = [s for s in self.signatures if s.keyid != key.keyid]
        self.signatures.append(Signature(key.keyid, sig))

    def to_dict(self) -> dict[str, Any]:
        return {
            "signed": self.signed,
            "signatures": [{"keyid": s.keyid, "sig": s.sig} for s in self.signatures],
        }

    def to_bytes(self) -> bytes:
        return canonical.encode(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes, *, max_bytes: int = canonical.MAX_METADATA_BYTES) -> Envelope:
        return cls.from_dict(canonical.decode(data, max_bytes=max_bytes))

    @classmethod
    def from_dict(cls, obj: Any) -> Envelope:
        if not isinstance(obj, dict):
            raise MetadataError("signed metadata must be a JSON object")
        signed, sigs = obj.get("signed"), obj.get("signatures")
        if not isinstance(signed, dict):
            raise MetadataError("metadata has no 'signed' object")
        if not isinstance(sigs, list):
            raise MetadataError("metadata has no 'signatures' list")
        if len(sigs) > MAX_SIGNATURES:
            raise MetadataError(f"metadata has more than {MAX_SIGNATURES} signatures")
        signatures = [
            Signature(s["keyid"], s["sig"])
            for s in sigs
            if isinstance(s, dict)
            and isinstance(s.get("keyid"), str)
            and isinstance(s.get("sig"), str)
        ]
        envelope = cls(signed, signatures)
        _ = envelope.metadata_type  # refuse unknown types before anyone looks further
        return envelope

    def valid_keyids(self, authorized: Iterable[str], keys: Mapping[str, PublicKey]) -> set[str]:
        """Distinct authorized key ids whose signature over this envelope verifies."""
        allowed = set(authorized)
        message = self.signing_input()
        valid: set[str] = set()
        for signature in self.signatures:
            if signature.keyid in valid or signature.keyid not in allowed:
                continue
            key = keys.get(signature.keyid)
            if key is None or key.keyid != signature.keyid:
                continue
            try:
                raw = bytes.fromhex(signature.sig)
            except ValueError:
                continue
            if key.verify(raw, message):
                valid.add(signature.keyid)
        return valid

    def require_threshold(
        self,
        role: str,
        authorized: Iterable[str],
        threshold: int,
        keys: Mapping[str, PublicKey],
        *,
        by: str = "",
    ) -> None:
        """Raise :class:`SignatureError` unless ``threshold`` distinct keys signed."""
        valid = self.valid_keyids(authorized, keys)
        if len(valid) < threshold:
            whose = f" of {by}" if by else ""
            raise SignatureError(
                f"{self.metadata_type} needs {threshold} valid signature(s) from distinct "
                f"{role} keys{whose}, found {len(valid)}"
            )


__all__ = ["MAX_SIGNATURES", "METADATA_TYPES", "Envelope", "Signature", "pae", "payload_type"]
