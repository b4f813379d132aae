"""Creating and rotating root metadata.

A root names the keys and thresholds of the ``root``, ``release`` and
``director`` roles. Version N+1 must be signed by a threshold of root N's root
keys and of its own, which is what :func:`rotate` produces: it replaces the
keys of the chosen roles, keeps the others, and signs with every old and new
root key it is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from fleetcore.envelope import Envelope
from fleetcore.keys import PrivateKey, PublicKey
from fleetcore.metadata import ROLES, Role, Root


@dataclass(frozen=True)
class RoleKeys:
    """The private keys and threshold chosen for one role."""

    keys: tuple[PrivateKey, ...]
    threshold: int


def build_root(
    roles: Mapping[str, RoleKeys], *, version: int, issued: datetime, expires_in: timedelta
) -> Root:
    keys: dict[str, PublicKey] = {}
    role_specs: dict[str, Role] = {}
    for name in ROLES:
        spec = roles[name]
        for key in spec.keys:
            keys[key.keyid] = key.public_key
        role_specs[name] = Role(tuple(k.keyid for k in spec.keys), spec.threshold)
    root = Root(version, issued, issued + expires_in, keys, role_specs)
    # Round-trip through the parser so every invariant (thresholds, key ids) holds.
    return Root.from_dict(root.to_dict())


def sign(root: Root, signers: Sequence[PrivateKey]) -> Envelope:
    envelope = Envelope(root.to_dict())
    for key in signers:
        envelope.sign(key)
    return envelope


def rotate(
    current: Root,
    *,
    replaced: Mapping[str, RoleKeys],
    issued: datetime,
    expires_in: timedelta,
) -> Root:
    """Root N+1: roles in ``replaced`` get new keys, the rest keep theirs."""
    keys: dict[str, PublicKey] = {}
    roles: dict[str, Role] = {}
    for name, role in current.roles.items():
        if name in replaced:
            spec = replaced[name]
            roles[name] = Role(tuple(k.keyid for k in spec.keys), spec.threshold)
            keys.update((k.keyid, k.public_key) for k in spec.keys)
        else:
            roles[name] = role
            keys.update((keyid, current.keys[keyid]) for keyid in role.keyids)
    new = Root(current.version + 1, issued, issued + expires_in, keys, roles, current.unrecognized)
    return Root.from_dict(new.to_dict())


__all__ = ["RoleKeys", "build_root", "rotate", "sign"]
