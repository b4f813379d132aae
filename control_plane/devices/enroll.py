"""Enrollment: an enrollment token and a self-signed request become a device.

Theory of operation: the device generates an Ed25519 key and signs an
envelope whose ``signed`` part (``_type: "enrollment"``) carries its public key,
capabilities, requested labels, hostname and time. The signature covers the
DSSE pre-authentication encoding of ``application/vnd.edgefleet.enrollment+json``
and the canonical JSON of ``signed``, exactly as for metadata
(:mod:`fleetcore.envelope`), and must verify under the public key inside: the
device proves it holds the private key.

:meth:`EnrollmentService.enroll` checks, in order: the enrollment token is
well formed and known (401), the request parses and its signature verifies,
its labels and capabilities are valid (422). Then, in one transaction, it
counts one use of the token (atomically: 409 when used up or expired), stores
the device with its issued credentials (409 when the public key is already
enrolled) and writes the audit entry, so a refused enrollment consumes no use.
Labels are the token's labels merged over the requested ones (the token wins).
After the commit the broker's password file is brought up to date.

The request's ``time`` is parsed but not enforced: devices without a
real-time clock enroll before their clock is set.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from control_plane.audit import audit
from control_plane.auth.tokens import ENROLL_PREFIX, hash_token, well_formed
from control_plane.config import Settings
from control_plane.devices import credentials
from control_plane.devices.broker import BrokerAccounts
from control_plane.errors import AuthenticationError, InvalidInputError
from control_plane.releases.keys import ReleaseKeys
from control_plane.store import DeviceRecord, Store
from fleetcore import canonical
from fleetcore.envelope import MAX_SIGNATURES, pae, payload_type
from fleetcore.errors import EdgefleetError, MetadataError
from fleetcore.keys import PublicKey
from fleetcore.metadata import parse_time
from fleetcore.protocol import Capabilities, check_labels

_T = TypeVar("_T")
ENROLLMENT_TYPE = "enrollment"
MAX_ENROLLMENT_BYTES = 256 * 1024
HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


@dataclass(frozen=True)
class EnrollmentRequest:
    public_key: PublicKey
    capabilities: Capabilities
    labels: dict[str, str]
    hostname: str
    time: datetime


@dataclass(frozen=True)
class Enrolled:
    """A new device and the secrets it receives once."""

    device: DeviceRecord
    token: str
    mqtt_password: str
    root: bytes
    mqtt_url: str | None  # the broker devices are told; None: HTTP only

    def __repr__(self) -> str:
        return f"Enrolled(device={self.device.id!r})"


def signing_input(signed: dict[str, Any]) -> bytes:
    """What the device's signature covers (the envelope rule, for ``_type: enrollment``)."""
    return pae(payload_type(ENROLLMENT_TYPE), canonical.encode(signed))


def _field(obj: Any, name: str, kind: type[_T], what: str = "the enrollment request") -> _T:
    value = obj.get(name) if isinstance(obj, dict) else None
    if not isinstance(value, kind):
        names: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}
        wanted = names.get(kind, kind.__name__)
        raise MetadataError(f"{what} needs {name!r} as {wanted}")
    return value


def _public_key(obj: dict[str, Any]) -> PublicKey:
    """The key object as in root metadata (``keyval.public``); a top-level ``public``
    copy, which early drafts of the protocol showed, must name the same key."""
    key = PublicKey.from_dict(obj)
    copy = obj.get("public")
    if copy is not None and copy != key.public.hex():
        raise MetadataError("public_key 'public' and 'keyval.public' name different keys")
    return key


def parse_request(body: bytes) -> EnrollmentRequest:
    """Parse a signed enrollment envelope and verify it under the key it contains.

    Raises:
        InvalidInputError: malformed, wrongly typed, or not signed by its own key.
    """
    try:
        obj = canonical.decode(body, max_bytes=MAX_ENROLLMENT_BYTES)
        signed = _field(obj, "signed", dict, "the enrollment envelope")
        signatures = _field(obj, "signatures", list, "the enrollment envelope")
        if len(signatures) > MAX_SIGNATURES:
            raise MetadataError(f"more than {MAX_SIGNATURES} signatures")
        if signed.get("_type") != ENROLLMENT_TYPE:
            raise MetadataError(f"_type is {signed.get('_type')!r}, expected 'enrollment'")
        key = _public_key(_field(signed, "public_key", dict))
        capabilities = Capabilities.from_dict(_field(signed, "capabilities", dict))
        labels = check_labels(signed.get("labels") or {})
        hostname = _field(signed, "hostname", str)
        if not HOSTNAME.fullmatch(hostname):
            raise MetadataError(f"hostname {hostname[:64]!r} must match {HOSTNAME.pattern}")
        when = parse_time(_field(signed, "time", str), "enrollment field 'time'")
    except EdgefleetError as exc:
        raise InvalidInputError(f"malformed enrollment request: {exc}") from exc
    message = signing_input(signed)
    for entry in signatures:
        if not (isinstance(entry, dict) and entry.get("keyid") == key.keyid):
            continue
        sig = entry.get("sig")
        try:
            raw = bytes.fromhex(sig) if isinstance(sig, str) else b""
        except ValueError:
            continue
        if key.verify(raw, message):
            return EnrollmentRequest(key, capabilities, labels, hostname, when)
    raise InvalidInputError(
        f"the enrollment request carries no valid signature by its own key {key.keyid[:16]}…"
    )


class EnrollmentService:
    def __init__(
        self,
        store: Store,
        keys: ReleaseKeys,
        broker: BrokerAccounts,
        settings: Settings,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.keys = keys
        self.broker = broker
        self.settings = settings
        self.clock = clock

    def enroll(self, enroll_token: str | None, body: bytes) -> Enrolled:
        if not enroll_token or not well_formed(enroll_token, ENROLL_PREFIX):
            raise AuthenticationError("enrollment needs 'Authorization: Bearer efe_…'")
        token = self.store.find_enroll_token(hash_token(enroll_token))
        if token is None:
            raise AuthenticationError("invalid enrollment token")
        request = parse_request(body)
        try:
            labels = check_labels({**request.labels, **token.labels})
        except EdgefleetError as exc:
            raise InvalidInputError(f"the enrollment token's labels are unusable: {exc}") from exc
        root = self.keys.root_bytes()  # before anything is written: no keys, no enrollment
        issued = credentials.issue()
        now = self.clock()
        with self.store.transaction() as tx:
            tx.use_enroll_token(token.id, now)
            device = tx.add_device(
                DeviceRecord(
                    id=issued.device_id,
                    hostname=request.hostname,
                    public_key=request.public_key.public.hex(),
                    keyid=request.public_key.keyid,
                    labels=labels,
                    capabilities=request.capabilities.to_dict(),
                    token_hash=issued.token_hash,
                    mqtt_password_hash=issued.mqtt_password_hash,
                    created_at=now,
                    agent_version=request.capabilities.agent_version or None,
                )
            )
            change = {
                "hostname": request.hostname,
                "labels": labels,
                "keyid": request.public_key.keyid,
                "enroll_token": token.id,
            }
            audit(tx, f"enroll-token:{token.id}", "device.enroll", "device", device.id, change, now)
        self.broker.sync_quietly()
        mqtt_url = self.settings.mqtt.devices_url
        return Enrolled(device, issued.token, issued.mqtt_password, root, mqtt_url)


__all__ = ["ENROLLMENT_TYPE", "Enrolled", "EnrollmentRequest", "EnrollmentService", "parse_request"]
