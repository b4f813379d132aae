"""A small fake control plane over real HTTP, for agent tests.

It speaks the device side of docs/protocol.md: enrollment, the desired state
(long-poll with ETag), report batches, root metadata by version and artifact
downloads with Range. Artifact serving can misbehave on request: ignore Range,
append bytes beyond the real artifact, cut the connection after some bytes,
or answer with a fixed status. Everything runs on a ThreadingHTTPServer on
127.0.0.1 and is recorded for assertions.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fleetcore import canonical
from fleetcore.envelope import pae, payload_type
from fleetcore.keys import PublicKey

_ARTIFACT = re.compile(r"/v1/artifacts/([0-9a-f]{64})")
_ROOT = re.compile(r"/v1/metadata/root/(\d+)")
_DESIRED = re.compile(r"/v1/devices/([a-z0-9_-]+)/desired")
_REPORTS = re.compile(r"/v1/devices/([a-z0-9_-]+)/reports")
_CHANNEL = re.compile(r"/v1/devices/([a-z0-9_-]+)/(drift|telemetry|captures)")


@dataclass
class ArtifactFaults:
    ignore_range: bool = False
    extra_bytes: int = 0
    cut_after_bytes: int | None = None
    cuts_left: int = 0
    status: int | None = None
    declare_length: bool = True  # False: no Content-Length, the body ends at close


@dataclass
class FakeState:
    artifacts: dict[str, bytes] = field(default_factory=dict)
    roots: dict[int, bytes] = field(default_factory=dict)
    desired: bytes | None = None
    etag: str | None = None
    reports: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    faults: ArtifactFaults = field(default_factory=ArtifactFaults)
    device_token: str = "efd_test-token"
    enroll_token: str = "efe_test-token"
    enroll_status: int | None = None
    enroll_answer: dict[str, Any] | None = None
    enrollments: list[dict[str, Any]] = field(default_factory=list)
    report_status: int = 200
    #: drift: encoded summaries; telemetry: report dicts; captures: (query, body)
    channels: dict[str, list[Any]] = field(
        default_factory=lambda: {"drift": [], "telemetry": [], "captures": []}
    )
    channel_status: int = 200
    changed: threading.Condition = field(default_factory=threading.Condition)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        return

    @property
    def state(self) -> FakeState:
        return self.server.state

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def _authorized(self, token: str) -> bool:
        return self.headers.get("Authorization") == f"Bearer {token}"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.state.requests.append(("GET", url.path, self.headers.get("Range")))
        if m := _ARTIFACT.fullmatch(url.path):
            self._artifact(m.group(1))
        elif m := _ROOT.fullmatch(url.path):
            data = self.state.roots.get(int(m.group(1)))
            self._send(404) if data is None else self._send(200, data)
        elif _DESIRED.fullmatch(url.path):
            self._desired(url.query)
        else:
            self._send(404)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.state.requests.append(("POST", url.path, None))
        if url.path == "/v1/enroll":
            self._enroll(body)
        elif _REPORTS.fullmatch(url.path):
            if not self._authorized(self.state.device_token):
                self._send(401)
                return
            if self.state.report_status != 200:
                self._send(self.state.report_status)
                return
            reports = json.loads(body)["reports"]
            self.state.reports.extend(reports)
            last = max((r["seq"] for r in self.state.reports), default=0)
            self._json(200, {"accepted": len(reports), "duplicates": 0, "last_seq": last})
        elif m := _CHANNEL.fullmatch(url.path):
            self._channel(m.group(2), url.query, body)
        else:
            self._send(404)

    def _channel(self, name: str, query: str, body: bytes) -> None:
        if not self._authorized(self.state.device_token):
            self._send(401)
            return
        if self.state.channel_status != 200:
            self._send(self.state.channel_status)
            return
        if name == "drift":
            self.state.channels[name].append(body)
        elif name == "telemetry":
            self.state.channels[name].extend(json.loads(body)["reports"])
        else:
            params = {k: v[0] for k, v in parse_qs(query).items()}
            self.state.channels[name].append((params, body))
        self._json(200, {"accepted": 1})

    def _desired(self, query: str) -> None:
        if not self._authorized(self.state.device_token):
            self._send(401)
            return
        wait = float(parse_qs(query).get("wait_s", ["0"])[0])
        seen = self.headers.get("If-None-Match")
        with self.state.changed:
            if self.state.desired is not None and seen == self.state.etag and wait > 0:
                self.state.changed.wait_for(lambda: self.state.etag != seen, timeout=wait)
            desired, etag = self.state.desired, self.state.etag
        if desired is None:
            self._send(204)
        elif seen == etag:
            self._send(304)
        else:
            self._send(200, desired, {"ETag": etag or "", "Content-Type": "application/json"})

    def _artifact(self, sha: str) -> None:
        faults = self.state.faults
        if not self._authorized(self.state.device_token):
            self._send(401)
            return
        if faults.status is not None:
            self._send(faults.status)
            return
        data = self.state.artifacts.get(sha)
        if data is None:
            self._send(404)
            return
        body = data + b"\0" * faults.extra_bytes
        start = 0
        rng = self.headers.get("Range")
        if rng and not faults.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
        if start >= len(body):
            self._send(416, headers={"Content-Range": f"bytes */{len(body)}"})
            return
        chunk = body[start:]
        status = 206 if start else 200
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        if faults.cuts_left > 0 and faults.cut_after_bytes is not None:
            faults.cuts_left -= 1
            self.send_header("Content-Length", str(len(chunk)))
            self.end_headers()
            self.wfile.write(chunk[: faults.cut_after_bytes])
            self.wfile.flush()
            self.close_connection = True
            return
        if faults.declare_length:
            self.send_header("Content-Length", str(len(chunk)))
        else:  # the body ends when the connection closes
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(chunk)

    def _enroll(self, body: bytes) -> None:
        if not self._authorized(self.state.enroll_token):
            self._json(401, {"error": "bad token"})
            return
        if self.state.enroll_status is not None:
            self._json(self.state.enroll_status, {"error": "refused"})
            return
        request = json.loads(body)
        signed = request["signed"]
        key = PublicKey.from_dict(signed["public_key"])
        sig = bytes.fromhex(request["signatures"][0]["sig"])
        message = pae(payload_type("enrollment"), canonical.encode(signed))
        if not key.verify(sig, message) or request["signatures"][0]["keyid"] != key.keyid:
            self._json(400, {"error": "bad signature"})
            return
        self.state.enrollments.append(request)
        answer = self.state.enroll_answer or {}
        self._json(201, {**answer, "labels": signed["labels"]})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: FakeState

    def handle_error(self, request: object, client_address: object) -> None:
        return  # clients hanging up mid-request are part of the tests


class FakeControlPlane:
    def __init__(self) -> None:
        self.state = FakeState()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeControlPlane:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_artifact(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self.state.artifacts[sha] = data
        return sha

    def set_desired(self, document: bytes, etag: str) -> None:
        with self.state.changed:
            self.state.desired, self.state.etag = document, etag
            self.state.changed.notify_all()

    def artifact_ranges(self) -> list[str | None]:
        return [r for m, p, r in self.state.requests if p.startswith("/v1/artifacts/")]
