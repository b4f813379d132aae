"""The device's identity and trust anchor on disk.

Theory of operation. Enrollment leaves three things under ``data_dir``::

    identity/            0700
      device.key         0600  Ed25519 private key (PKCS#8 PEM), generated here
      device.json        0600  device id, device token, MQTT credential, server, labels
    trust/
      root.json          0644  the newest verified root (pinned at enrollment,
                               replaced as the agent walks the root chain)

Secrets are written with :func:`write_private`: a temporary file created with
mode 0600 (never briefly world-readable), fsynced, renamed over the target,
and the directory fsynced. A device without ``device.json`` is not enrolled
and the daemon refuses to run (:class:`~agent.errors.NotEnrolledError`);
a device without ``root.json`` has no trust anchor and refuses to verify
anything (fail closed).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.errors import NotEnrolledError, StateError
from agent.slots import atomic_write, fsync_dir
from fleetcore.errors import EdgefleetError
from fleetcore.keys import PrivateKey
from fleetcore.metadata import format_time, parse_time
from fleetcore.protocol import check_device_id, check_labels

IDENTITY_DIR = Path("identity")
KEY_FILE = IDENTITY_DIR / "device.key"
IDENTITY_FILE = IDENTITY_DIR / "device.json"
ROOT_FILE = Path("trust") / "root.json"


@dataclass(frozen=True)
class MqttCredential:
    url: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Identity:
    device_id: str
    device_token: str = field(repr=False)
    server: str
    enrolled_at: datetime
    mqtt: MqttCredential | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        mqtt = self.mqtt
        return {
            "device_id": self.device_id,
            "device_token": self.device_token,
            "server": self.server,
            "enrolled_at": format_time(self.enrolled_at),
            "mqtt": None
            if mqtt is None
            else {"url": mqtt.url, "username": mqtt.username, "password": mqtt.password},
            "labels": dict(sorted(self.labels.items())),
        }

    @classmethod
    def from_dict(cls, obj: Any) -> Identity:
        if not isinstance(obj, dict):
            raise StateError("identity must be a JSON object")
        try:
            mqtt = obj.get("mqtt")
            return cls(
                device_id=check_device_id(obj["device_id"]),
                device_token=_string(obj["device_token"], "device_token"),
                server=_string(obj["server"], "server"),
                enrolled_at=parse_time(obj["enrolled_at"], "enrolled_at"),
                mqtt=None
                if mqtt is None
                else MqttCredential(
                    _string(mqtt["url"], "mqtt.url"),
                    _string(mqtt["username"], "mqtt.username"),
                    _string(mqtt["password"], "mqtt.password"),
                ),
                labels=check_labels(obj.get("labels", {})),
            )
        except (KeyError, TypeError) as exc:
            raise StateError(f"identity file is missing or mistypes {exc}") from exc
        except EdgefleetError as exc:
            raise StateError(f"identity file is invalid: {exc}") from exc


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise StateError(f"identity field {name!r} must be a non-empty string")
    return value


def write_private(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, readable by the owner only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    fsync_dir(path.parent)


def is_enrolled(data_dir: Path) -> bool:
    return (data_dir / IDENTITY_FILE).exists()


def load_identity(data_dir: Path) -> Identity:
    path = data_dir / IDENTITY_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotEnrolledError(
            f"this device is not enrolled (no {path}); run "
            "'fleet-agent enroll --server URL --token TOKEN' first"
        ) from None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return Identity.from_dict(json.loads(raw))
    except ValueError as exc:
        raise StateError(f"{path} is not valid JSON") from exc


def load_key(data_dir: Path) -> PrivateKey:
    path = data_dir / KEY_FILE
    try:
        return PrivateKey.from_pem(path.read_bytes())
    except FileNotFoundError:
        raise NotEnrolledError(f"device key {path} is missing: enroll again") from None
    except (OSError, EdgefleetError) as exc:
        raise StateError(f"cannot load device key {path}: {exc}") from exc


def save_identity(data_dir: Path, identity: Identity, key: PrivateKey) -> None:
    """Write the key first, then the identity: a device is enrolled once both exist."""
    identity_dir = data_dir / IDENTITY_DIR
    identity_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    identity_dir.chmod(0o700)
    write_private(data_dir / KEY_FILE, key.to_pem())
    body = json.dumps(identity.to_dict(), sort_keys=True, indent=2).encode()
    write_private(data_dir / IDENTITY_FILE, body)


def load_root(data_dir: Path) -> bytes | None:
    try:
        return (data_dir / ROOT_FILE).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read the trusted root: {exc.strerror or exc}") from exc


def save_root(data_dir: Path, root: bytes) -> None:
    """Pin ``root`` (already verified by the caller) as the trust anchor."""
    atomic_write(data_dir / ROOT_FILE, root)


__all__ = [
    "IDENTITY_FILE",
    "KEY_FILE",
    "ROOT_FILE",
    "Identity",
    "MqttCredential",
    "is_enrolled",
    "load_identity",
    "load_key",
    "load_root",
    "save_identity",
    "save_root",
    "write_private",
]
