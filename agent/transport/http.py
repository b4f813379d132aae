"""The HTTP transport: long-poll for the desired state, POST report batches.

Theory of operation. :meth:`HttpTransport.receive` asks
``GET /v1/devices/{d}/desired?wait_s=N`` with ``If-None-Match`` set to the
last ETag; the server answers at once when the desired state differs and
otherwise holds the request up to ``wait_s`` before ``304``. A ``200`` yields
the document and remembers its ETag, so each document is delivered once per
change. :meth:`HttpTransport.send` POSTs the reports (at most 500 per request)
and confirms them all on ``200``. ``connected`` reflects the last request:
set on success, cleared on a transport error.

The other channels: :meth:`publish` POSTs each drift summary alone to
``/v1/devices/{d}/drift`` (``application/octet-stream``, the encoded summary
as the body) and telemetry reports in batches of at most 500 to
``/v1/devices/{d}/telemetry`` as ``{"reports": [...]}``;
:meth:`upload_capture` POSTs one ``.npz`` sample to
``/v1/devices/{d}/captures`` with its query parameters. A summary that fails
after earlier ones were confirmed returns the count confirmed so far, so the
queue removes exactly those. Errors are the ones of :mod:`agent.api`:
:class:`~agent.errors.TransportError` (retry) or
:class:`~agent.errors.ServerError` (the server refused this payload).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import httpx

from agent.api import MAX_REPORTS_PER_POST, ControlPlane, raise_for_status
from agent.errors import TransportError
from fleetcore.protocol import Channel

OCTETS = "application/octet-stream"


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

    def publish(self, channel: Channel, payloads: Sequence[bytes]) -> int:
        if channel is Channel.DRIFT:
            return self._each(payloads)
        if channel is Channel.TELEMETRY:
            return self._batches(payloads)
        raise ValueError(f"the agent does not publish on {channel.value}")

    def _each(self, summaries: Sequence[bytes]) -> int:
        confirmed = 0
        for body in summaries:
            try:
                self._post("drift", body, OCTETS, "sending a drift summary")
            except TransportError:
                if confirmed:
                    return confirmed
                raise
            confirmed += 1
        return confirmed

    def _batches(self, reports: Sequence[bytes]) -> int:
        confirmed = 0
        for start in range(0, len(reports), MAX_REPORTS_PER_POST):
            chunk = reports[start : start + MAX_REPORTS_PER_POST]
            body = b'{"reports":[' + b",".join(chunk) + b"]}"
            try:
                self._post("telemetry", body, "application/json", "sending telemetry")
            except TransportError:
                if confirmed:
                    return confirmed
                raise
            confirmed += len(chunk)
        return confirmed

    def upload_capture(self, body: bytes, params: Mapping[str, str]) -> None:
        """POST one input sample (``.npz``) with its ``model``/``release``/``window_start``."""
        self._post("captures", body, OCTETS, "uploading an input sample", params=params)

    def _post(
        self,
        route: str,
        body: bytes,
        ctype: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
    ) -> None:
        url = f"/v1/devices/{self.api.device_id}/{route}"
        try:
            response = self.api.client.post(
                url, content=body, params=dict(params or {}), headers={"Content-Type": ctype}
            )
        except httpx.HTTPError as exc:
            self._note(False)
            raise TransportError(f"{what}: {exc.__class__.__name__}: {exc}") from exc
        try:
            raise_for_status(response, what)
        except TransportError:
            self._note(False)
            raise
        self._note(True)


__all__ = ["OCTETS", "HttpTransport"]
