"""Where the control plane's MQTT client connects, and under which client id."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname or "", parts.port or (8883 if tls else 1883), tls)


def client_id(slot: int) -> str:
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"
    return f"edgefleet-cp-{host}-{slot}"


__all__ = ["Endpoint", "client_id"]
