"""Enrolling simulated devices through the control plane's real ``POST /v1/enroll``.

Theory of operation: as ``agent.enroll`` does it, each device gets a fresh
Ed25519 key, signs its request with it (``agent.enroll.signed_request``) and
checks that the root in the answer is self-consistent
(:class:`~fleetcore.trust.TrustedSet`) before pinning it. Requests run
``enroll_concurrency`` at a time (threads, one keep-alive client each). Labels:
the caller's, plus ``fleetsim=1`` and ``fleetsim.behaviour=<behaviour>``, so a
rollout's selector can pick or skip a behaviour. The capabilities are those of
an x86-64 device with onnxruntime (ONNX opsets 7 to 21).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

import httpx

from agent.enroll import signed_request
from fleetcore import __version__, canonical
from fleetcore.envelope import Envelope
from fleetcore.keys import PrivateKey
from fleetcore.protocol import check_device_id
from fleetcore.trust import TrustedSet

CAPABILITIES: dict[str, Any] = {
    "runtimes": {"onnxruntime": "1.20.1"},
    "formats": ["onnx"],
    "onnx_opsets": [7, 21],
    "arch": "x86_64",
    "ram_bytes": 1 << 30,
    "disk_free_bytes": 1 << 30,
    "os": "linux",
    "agent_version": __version__,
}


class EnrollConfig(Protocol):
    """What enrollment needs of a worker's configuration."""

    @property
    def index(self) -> int: ...
    @property
    def server_url(self) -> str: ...
    @property
    def enroll_token(self) -> str: ...
    @property
    def behaviours(self) -> list[str]: ...
    @property
    def labels(self) -> list[dict[str, str]]: ...
    @property
    def enroll_concurrency(self) -> int: ...


@dataclass(frozen=True)
class Identity:
    device_id: str
    token: str
    mqtt_url: str | None
    mqtt_password: str | None
    root: bytes
    behaviour: str


# -- enrollment -----------------------------------------------------------------------------


class EnrollError(RuntimeError):
    pass


def _enroll_one(
    client: httpx.Client, token: str, labels: dict[str, str], behaviour: str, name: str
) -> Identity:
    key = PrivateKey.generate()
    body = signed_request(key, CAPABILITIES, labels, name, datetime.now(timezone.utc))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    response = client.post("/v1/enroll", content=canonical.encode(body), headers=headers)
    if response.status_code != 201:
        raise EnrollError(f"enrollment: HTTP {response.status_code}: {response.text[:300]}")
    answer = response.json()
    device_id = check_device_id(answer["device_id"])
    root = Envelope.from_dict(answer["root"]).to_bytes()
    TrustedSet(root, device_id=device_id)  # self-consistent, as agent.enroll checks
    mqtt = answer.get("mqtt") or {}
    return Identity(
        device_id, answer["device_token"], mqtt.get("url"), mqtt.get("password"), root, behaviour
    )


def enroll_all(config: EnrollConfig) -> list[Identity]:
    local = threading.local()
    clients: list[httpx.Client] = []

    def one(index: int) -> Identity:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=config.server_url, timeout=300)
            clients.append(client)
        labels = {
            **config.labels[index],
            "fleetsim": "1",
            "fleetsim.behaviour": config.behaviours[index],
        }
        name = f"sim-{config.index}-{index}"
        return _enroll_one(client, config.enroll_token, labels, config.behaviours[index], name)

    try:
        with ThreadPoolExecutor(config.enroll_concurrency) as pool:
            return list(pool.map(one, range(len(config.behaviours))))
    finally:
        for client in clients:
            client.close()


__all__ = ["CAPABILITIES", "EnrollConfig", "EnrollError", "Identity", "enroll_all"]
