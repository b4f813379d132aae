"""Root metadata: the keys and thresholds of every role.

Invariants enforced on parse: the roles ``root``, ``release`` and ``director``
are all present; every threshold is at least 1 and no larger than the number
of listed key ids; every listed key id names a key in ``keys`` whose key id
really is its hash (a key cannot be listed under someone else's id).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fleetcore.errors import MetadataError
from fleetcore.keys import PublicKey
from fleetcore.metadata._fields import SHA256_HEX, SPEC_VERSION, Fields, format_time

ROLES = ("root", "release", "director")


@dataclass(frozen=True)
class Role:
    keyids: tuple[str, ...]
    threshold: int
    unrecognized: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, obj: Any, name: str) -> Role:
        f = Fields(obj, f"role {name!r}")
        keyids = f.string_list("keyids", pattern=SHA256_HEX)
        if len(set(keyids)) != len(keyids):
            raise MetadataError(f"role {name!r} lists a key id twice")
        threshold = f.integer("threshold", minimum=1)
        if threshold > len(keyids):
            raise MetadataError(
                f"role {name!r} threshold {threshold} exceeds its {len(keyids)} key(s)"
            )
        return cls(keyids=keyids, threshold=threshold, unrecognized=f.rest())

    def to_dict(self) -> dict[str, Any]:
        return {**self.unrecognized, "keyids": list(self.keyids), "threshold": self.threshold}


@dataclass(frozen=True)
class Root:
    version: int
    issued: datetime
    expires: datetime
    keys: dict[str, PublicKey]
    roles: dict[str, Role]
    unrecognized: dict[str, Any] = field(default_factory=dict, compare=False)

    type = "root"

    @classmethod
    def from_dict(cls, obj: Any) -> Root:
        f = Fields(obj, "root")
        f.expect("_type", cls.type)
        f.spec_version()
        version = f.integer("version", minimum=1)
        issued, expires = f.time("issued"), f.time("expires")
        keys: dict[str, PublicKey] = {}
        for keyid, key_obj in f.required_object("keys").items():
            key = PublicKey.from_dict(key_obj)
            if key.keyid != keyid:
                raise MetadataError(f"root lists a key under id {keyid[:16]}…, which is not its id")
            keys[keyid] = key
        roles_obj = f.required_object("roles")
        missing = [name for name in ROLES if name not in roles_obj]
        if missing:
            raise MetadataError(f"root is missing role {missing[0]!r}")
        roles = {name: Role.from_dict(value, name) for name, value in roles_obj.items()}
        for name, role in roles.items():
            unknown = [k for k in role.keyids if k not in keys]
            if unknown:
                raise MetadataError(f"role {name!r} names key {unknown[0][:16]}… not in root keys")
        return cls(version, issued, expires, keys, roles, f.rest())

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.unrecognized,
            "_type": self.type,
            "spec_version": SPEC_VERSION,
            "version": self.version,
            "issued": format_time(self.issued),
            "expires": format_time(self.expires),
            "keys": {keyid: key.to_dict() for keyid, key in self.keys.items()},
            "roles": {name: role.to_dict() for name, role in self.roles.items()},
        }

    def role(self, name: str) -> Role:
        return self.roles[name]


__all__ = ["ROLES", "Role", "Root"]
