"""Enrollment: a key made here, a signed request, credentials and a pinned root back.

Theory of operation. :func:`enroll` refuses an enrolled data directory unless
``force`` (and refuses while an agent holds the data directory's lock), then:

1. generates an Ed25519 key on the device (it never leaves the device);
2. collects :mod:`agent.capabilities`;
3. signs ``{"_type": "enrollment", "public_key", "capabilities", "labels",
   "hostname", "time"}`` as a DSSE-style envelope, exactly like metadata:
   the signature covers ``PAE("application/vnd.edgefleet.enrollment+json",
   canonical(signed))``, which proves the device holds the private key;
4. POSTs it to ``/v1/enroll`` with the enrollment token;
5. checks the answer: a valid device id and token, an MQTT credential or
   null, and a root that is self-consistent (signed by a threshold of its own
   root keys, :class:`~fleetcore.trust.TrustedSet`) and not expired;
6. writes the identity (0600 files in a 0700 directory), pins the root, and
   resets the state database (a new identity starts a new report sequence and
   trust state); verified models already in the store and the active pointer
   are kept, so the device keeps serving;
7. writes the agent configuration (server, data_dir; other keys are kept).

The public key is sent as ``{"keytype", "scheme", "public"}`` as documented
in ``docs/protocol.md``, with ``keyval.public`` repeated so it also parses as
fleetcore's :class:`~fleetcore.keys.PublicKey` form.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from agent import capabilities
from agent.api import raise_for_status, tls_verify
from agent.config import AgentConfig, save_config, with_overrides
from agent.errors import (
    AgentError,
    AlreadyEnrolledError,
    AuthError,
    ConfigError,
    ConflictError,
    ServerError,
    StateError,
    TransportError,
)
from agent.identity import (
    Identity,
    MqttCredential,
    is_enrolled,
    load_root,
    save_identity,
    save_root,
)
from agent.lock import DataDirLock
from agent.statedb import DB_FILE
from fleetcore import __version__, canonical
from fleetcore.envelope import Envelope, pae, payload_type
from fleetcore.errors import EdgefleetError
from fleetcore.keys import KEY_TYPE, SCHEME, PrivateKey
from fleetcore.metadata import format_time
from fleetcore.protocol import check_device_id, check_labels
from fleetcore.trust import TrustedSet

ENROLLMENT_TYPE = "enrollment"


@dataclass(frozen=True)
class EnrollResult:
    identity: Identity
    root_version: int
    config_path: Path


def signed_request(
    key: PrivateKey, caps: dict[str, Any], labels: dict[str, str], hostname: str, now: datetime
) -> dict[str, Any]:
    public = key.public_key.public.hex()
    signed = {
        "_type": ENROLLMENT_TYPE,
        "public_key": {
            "keytype": KEY_TYPE,
            "scheme": SCHEME,
            "public": public,
            "keyval": {"public": public},
        },
        "capabilities": caps,
        "labels": labels,
        "hostname": hostname,
        "time": format_time(now),
    }
    message = pae(payload_type(ENROLLMENT_TYPE), canonical.encode(signed))
    return {"signed": signed, "signatures": [{"keyid": key.keyid, "sig": key.sign(message).hex()}]}


def _hostname() -> str:
    name = socket.gethostname().split(".")[0]
    return name[:64] or "device"


def _post(
    server: str, token: str, body: dict[str, Any], config: AgentConfig, transport: Any
) -> Any:
    url = f"{server.rstrip('/')}/v1/enroll"
    try:
        with httpx.Client(
            timeout=config.http.timeout_s * 3,
            verify=tls_verify(config.tls_ca_path),
            transport=transport,
        ) as client:
            response = client.post(
                url,
                content=canonical.encode(body),
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json",
                    "User-Agent": f"fleet-agent/{__version__}",
                },
            )
    except httpx.HTTPError as exc:
        raise TransportError(f"cannot reach the control plane at {server}: {exc}") from exc
    try:
        raise_for_status(response, "enrollment")
    except AuthError as exc:
        raise AuthError(
            "the control plane refused the enrollment token (unknown, expired or used up); "
            "create a new one with 'fleetctl enroll-token create'",
            status=exc.status,
        ) from exc
    except ConflictError as exc:
        raise ConflictError(f"the control plane refused a duplicate enrollment: {exc}") from exc
    if response.status_code not in (200, 201):
        raise ServerError(f"enrollment: unexpected HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError as exc:
        raise ServerError("enrollment: the answer is not JSON") from exc


def _parse_answer(answer: Any, server: str, now: datetime) -> tuple[Identity, bytes, int]:
    if not isinstance(answer, dict):
        raise ServerError("enrollment: the answer is not a JSON object")
    try:
        device_id = check_device_id(answer["device_id"])
        token = answer["device_token"]
        if not isinstance(token, str) or not token:
            raise ServerError("enrollment: no device token in the answer")
        mqtt_obj = answer.get("mqtt")
        mqtt = None
        if mqtt_obj is not None:
            mqtt = MqttCredential(
                str(mqtt_obj["url"]), str(mqtt_obj["username"]), str(mqtt_obj["password"])
            )
        root = Envelope.from_dict(answer["root"]).to_bytes()
        trusted = TrustedSet(root, device_id=device_id)  # self-consistent, or raises
        if trusted.root.expires <= now:
            raise ServerError(f"enrollment: root v{trusted.root.version} has expired")
        labels = check_labels(answer.get("labels") or {})
    except (KeyError, TypeError) as exc:
        raise ServerError(f"enrollment: the answer lacks or mistypes {exc}") from exc
    except EdgefleetError as exc:
        raise ServerError(f"enrollment: the answer does not verify: {exc.one_line()}") from exc
    identity = Identity(device_id, token, server, now.replace(microsecond=0), mqtt, labels)
    return identity, root, trusted.root.version


_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def _check_transport_security(server: str, allow_http: bool) -> None:
    """Plain HTTP would expose the token and let a network attacker pick the root."""
    parsed = urlsplit(server)
    if parsed.scheme == "https" or allow_http or parsed.hostname in _LOOPBACK:
        return
    raise ConfigError(
        f"refusing to enroll over {parsed.scheme or 'an unknown scheme'}://: the enrollment "
        "token and the root this device pins would travel unprotected. Use https://, or "
        "--insecure-http on a network you trust (better with --root FILE)"
    )


def _anchored_root(
    anchor: bytes, server_root: bytes, server: str, config: AgentConfig, transport: Any
) -> tuple[bytes, int]:
    """Walk from the operator-supplied root to the server's, verifying each step.

    Every root from ``anchor`` on must be signed by the threshold of the one
    before it, so a server (or anyone in between) cannot substitute its own.
    """
    trusted = TrustedSet(anchor)
    target = TrustedSet(server_root).root.version
    if target < trusted.root.version:
        raise ServerError(
            f"enrollment: the server's root v{target} is older than the pinned "
            f"root v{trusted.root.version}"
        )
    latest = anchor
    with httpx.Client(
        base_url=server,
        timeout=config.http.timeout_s,
        verify=tls_verify(config.tls_ca_path),
        transport=transport,
    ) as client:
        while trusted.root.version < target:
            wanted = trusted.root.version + 1
            try:
                response = client.get(f"/v1/metadata/root/{wanted}")
                response.raise_for_status()
            except httpx.HTTPError as exc:
                raise ServerError(f"enrollment: cannot fetch root v{wanted}: {exc}") from exc
            trusted.update_root(response.content)
            latest = response.content
    if canonical.decode(latest) != canonical.decode(server_root):
        raise ServerError(
            f"enrollment: the server's root v{target} is not the one that chains from --root"
        )
    return latest, target


def _pinned_version(data_dir: Path) -> int | None:
    try:
        return TrustedSet(load_root(data_dir)).root.version
    except (OSError, EdgefleetError, AgentError):
        return None


def _reset_state(data_dir: Path) -> None:
    """Forget the previous identity's journal, outbox, downloads and root."""
    db = data_dir / DB_FILE
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        path.unlink(missing_ok=True)
    shutil.rmtree(data_dir / "downloads", ignore_errors=True)


def enroll(
    *,
    server: str,
    token: str,
    labels: dict[str, str],
    config: AgentConfig,
    config_path: Path,
    force: bool = False,
    root_anchor: bytes | None = None,
    allow_http: bool = False,
    transport: httpx.BaseTransport | None = None,
) -> EnrollResult:
    """Enroll; with ``root_anchor`` (the install bundle's root) the server's root must
    chain from it. Plain HTTP is refused except on loopback or with ``allow_http``."""
    data_dir = config.data_dir
    labels = check_labels(labels)
    _check_transport_security(server, allow_http)
    if is_enrolled(data_dir) and not force:
        raise AlreadyEnrolledError(
            f"this device is already enrolled (data dir {data_dir}); "
            "use --force to enroll again with a new key and identity"
        )
    loaded = config
    config = with_overrides(config, server=server.rstrip("/"))
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with DataDirLock(data_dir, blocking=False, purpose="enroll"):
        now = datetime.now(timezone.utc)
        key = PrivateKey.generate()
        caps = capabilities.collect(data_dir).to_dict()
        body = signed_request(key, caps, labels, _hostname(), now)
        answer = _post(config.server, token, body, config, transport)
        identity, root, version = _parse_answer(answer, config.server, now)
        if root_anchor is not None:
            root, version = _anchored_root(root_anchor, root, config.server, config, transport)
        pinned = _pinned_version(data_dir) if force else None
        if pinned is not None and version < pinned:
            raise ServerError(
                f"enrollment: the server's root v{version} is older than the root v{pinned} "
                "this device already pins; refusing to move trust backwards"
            )
        try:
            _reset_state(data_dir)
            save_identity(data_dir, identity, key)
            save_root(data_dir, root)
        except OSError as exc:
            raise StateError(f"cannot write the identity under {data_dir}: {exc}") from exc
    # An installer writes the configuration (root-owned, read-only to the
    # agent's user) before enrolling; leave it alone when nothing changes.
    if config != loaded or not config_path.exists():
        save_config(config, config_path)
    return EnrollResult(identity, version, config_path)


__all__ = ["ENROLLMENT_TYPE", "EnrollResult", "enroll", "signed_request"]
