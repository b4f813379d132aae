"""What a device receives at enrollment: its id, its API token and its MQTT password.

Theory of operation: the control plane chooses the device id (``dev-`` and 20
lower-case base32 characters, 100 random bits), so a device can never pick a
name that collides with another account or widens an MQTT ACL pattern. The
device token (``efd_…``) and the MQTT password are 256-bit random secrets
returned once; only their hashes are stored: SHA-256 for the token (looked up
by hash), Mosquitto's ``$7$`` PBKDF2 for the password (written to the
broker's password file as it is).
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass

from control_plane.auth.tokens import DEVICE_PREFIX, hash_token, new_token
from control_plane.mqtt.passwords import hash_password, new_password

DEVICE_ID_PREFIX = "dev-"
#: Ids the control plane issues; a subset of fleetcore.protocol.DEVICE_ID.
DEVICE_ID = re.compile(r"dev-[a-z2-7]{20}")


def new_device_id() -> str:
    return DEVICE_ID_PREFIX + base64.b32encode(secrets.token_bytes(15)).decode().lower()[:20]


def is_device_username(name: str) -> bool:
    """Whether a broker username belongs to the devices the control plane manages."""
    return name.startswith(DEVICE_ID_PREFIX)


@dataclass(frozen=True)
class IssuedCredentials:
    device_id: str
    token: str
    token_hash: str
    mqtt_password: str
    mqtt_password_hash: str

    def __repr__(self) -> str:  # never show the secrets
        return f"IssuedCredentials(device_id={self.device_id!r})"


def issue() -> IssuedCredentials:
    token = new_token(DEVICE_PREFIX)
    password = new_password()
    return IssuedCredentials(
        device_id=new_device_id(),
        token=token,
        token_hash=hash_token(token),
        mqtt_password=password,
        mqtt_password_hash=hash_password(password),
    )


__all__ = [
    "DEVICE_ID",
    "DEVICE_ID_PREFIX",
    "IssuedCredentials",
    "is_device_username",
    "issue",
    "new_device_id",
]
