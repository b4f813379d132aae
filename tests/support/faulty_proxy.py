"""A misbehaving HTTP proxy in front of the real control plane, for fault tests.

Agents under test are pointed at the proxy instead of the server. Every
request is forwarded unchanged, except artifact downloads
(``GET /v1/artifacts/<sha256>``), which the proxy can spoil the way real
networks and servers do:

* ``cut_after_bytes``: the connection drops after that many body bytes, once
  per armed fault (an interrupted download);
* ``ignore_range``: the ``Range`` header is dropped, so the server answers 200
  with the whole body (a server or cache that ignores Range);
* ``extra_bytes``: more bytes than the server sent are appended (a hostile or
  broken mirror);
* ``delay_per_chunk_s``: a pause after each chunk (a slow link), so a test
  can act while a download is in flight.

It records what it saw (``requests``), so a test can assert that an agent
resumed with ``Range`` rather than starting over.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Faults:
    cut_after_bytes: int | None = None
    cuts_left: int = 0
    ignore_range: bool = False
    extra_bytes: int = 0
    delay_per_chunk_s: float = 0.0
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    def artifact_requests(self) -> list[str | None]:
        """The Range header of every artifact download seen, in order."""
        return [rng for method, path, rng in self.requests if path.startswith("/v1/artifacts/")]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format: str, *args: object) -> None:
        return

    def _forward(self) -> None:
        faults = self.server.faults
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers.pop("Host", None)
        artifact = self.command == "GET" and self.path.startswith("/v1/artifacts/")
        faults.requests.append((self.command, self.path, self.headers.get("Range")))
        if artifact and faults.ignore_range:
            headers = {k: v for k, v in headers.items() if k.lower() != "range"}
        request = self.server.client.build_request(
            self.command, self.path, headers=headers, content=body
        )
        upstream = self.server.client.send(request, stream=True)
        try:
            self._reply(upstream, artifact)
        finally:
            upstream.close()

    def _reply(self, upstream: httpx.Response, artifact: bool) -> None:
        faults = self.server.faults
        extra = faults.extra_bytes if artifact else 0
        cut = None
        if artifact and faults.cuts_left > 0 and faults.cut_after_bytes is not None:
            faults.cuts_left -= 1
            cut = faults.cut_after_bytes
        self.send_response(upstream.status_code)
        for key, value in upstream.headers.items():
            if key.lower() in HOP_BY_HOP or key.lower() == "content-length":
                continue
            self.send_header(key, value)
        declared = upstream.headers.get("content-length")
        if declared is not None:
            self.send_header("Content-Length", str(int(declared) + extra))
        self.send_header("Connection", "close")
        self.end_headers()
        sent = 0
        for chunk in upstream.iter_raw():
            if cut is not None and sent + len(chunk) >= cut:
                self.wfile.write(chunk[: cut - sent])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(chunk)
            sent += len(chunk)
            if artifact and faults.delay_per_chunk_s:
                self.wfile.flush()
                time.sleep(faults.delay_per_chunk_s)
        if extra:
            self.wfile.write(b"\0" * extra)
        self.wfile.flush()
        self.close_connection = True

    do_GET = do_POST = do_HEAD = do_PATCH = do_DELETE = do_PUT = _forward  # noqa: N815


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, faults: Faults) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.faults = faults
        self.client = httpx.Client(base_url=upstream, timeout=120)


@dataclass
class Proxy:
    url: str
    faults: Faults


@contextlib.contextmanager
def faulty_proxy(upstream: str) -> Iterator[Proxy]:
    server = _ProxyServer(upstream, Faults())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Proxy(f"http://127.0.0.1:{server.server_address[1]}", server.faults)
    finally:
        server.shutdown()
        server.server_close()
        server.client.close()


__all__ = ["Faults", "Proxy", "faulty_proxy"]
