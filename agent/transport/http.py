"""The HTTP transport: long-poll for the desired state, POST report batches.

Theory of operation. :meth:`HttpTransport.receive` asks
``GET /v1/devices/{d}/desired?wait_s=N`` with ``If-None-Match`` set to the
last ETag; the server answers at once when the desired state differs and
otherwise holds the request up to ``wait_s`` before ``304``. A ``200`` yields
the document and remembers its ETag, so each document is delivered once per
change. :meth:`HttpTransport.send` POSTs the reports (at most 500 per request)
and confirms them all on ``200``. ``connected`` reflects the last request:
set on success, cleared on a transport error.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from agent.api import ControlPlane
from agent.errors import TransportError


class HttpTransport:
    name = "http"

    def __init__(self, api: ControlPlane, *, wait_s: float) -> None:
        self.api = api
        self.wait_s = wait_s
        self.etag: str | None = None
        self._up = threading.Event()

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    @property
    def current(self) -> str:
        return "http" if self.connected else "none"

    def start(self) -> None:
        return None

    def close(self) -> None:
        return None

    def _note(self, ok: bool) -> None:
        if ok:
            self._up.set()
        else:
            self._up.clear()

    def receive(self, timeout_s: float) -> bytes | None:
        try:
            answer = self.api.desired(wait_s=min(self.wait_s, timeout_s), etag=self.etag)
        except TransportError:
            self._note(False)
            raise
        self._note(True)
        if answer.body is None:
            return None
        self.etag = answer.etag
        return answer.body

    def send(self, reports: Sequence[bytes]) -> int:
        if not reports:
            return 0
        try:
            self.api.post_reports(list(reports))
        except TransportError:
            self._note(False)
            raise
        self._note(True)
        return len(reports)


__all__ = ["HttpTransport"]
