"""The control plane's device endpoints over HTTP (httpx), with errors converted.

Theory of operation. :class:`ControlPlane` wraps one ``httpx.Client`` with the
device token and offers the few calls an enrolled device makes: the desired
state (long-poll with ETag), report batches, root metadata by version, and
the artifact stream (used by :mod:`agent.download`). Every httpx exception
becomes :class:`~agent.errors.TransportError` (unreachable, timed out, 5xx:
worth retrying) or :class:`~agent.errors.ServerError` (the server answered and
refused: retrying the same request will not help) at this edge.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx

from agent.errors import AuthError, ConflictError, ServerError, TransportError
from fleetcore import __version__
from fleetcore.protocol import MAX_DESIRED_BYTES, check_device_id

#: Reports per POST; the protocol allows at most 500.
MAX_REPORTS_PER_POST = 500


def tls_verify(ca_path: Path | None) -> ssl.SSLContext | bool:
    """httpx ``verify``: the given CA bundle, or the system store."""
    if ca_path is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_path))
    except (OSError, ssl.SSLError) as exc:
        raise TransportError(f"cannot load the CA bundle {ca_path}: {exc}") from exc


def raise_for_status(response: httpx.Response, what: str) -> None:
    """Convert an error answer into our exceptions; 2xx and 3xx pass."""
    status = response.status_code
    if status < 400:
        return
    detail = " ".join(response.text[:300].split()) if response.content else ""
    message = f"{what}: HTTP {status}" + (f": {detail}" if detail else "")
    if status in (401, 403):
        raise AuthError(message, status=status)
    if status == 409:
        raise ConflictError(message, status=status)
    if status >= 500 or status in (408, 425, 429):
        raise TransportError(message)
    raise ServerError(message, status=status)


@dataclass(frozen=True)
class DesiredAnswer:
    """``body`` is the desired-state document (200) or None (204 none, 304 unchanged)."""

    status: int
    body: bytes | None
    etag: str | None


class ControlPlane:
    """HTTP calls of one enrolled device."""

    def __init__(
        self,
        server: str,
        device_id: str,
        token: str,
        *,
        tls_ca_path: Path | None = None,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.device_id = check_device_id(device_id)
        self.timeout_s = timeout_s
        self.client = httpx.Client(
            base_url=self.server,
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": f"fleet-agent/{__version__}",
            },
            timeout=timeout_s,
            verify=tls_verify(tls_ca_path),
            transport=transport,
        )

    def _request(
        self,
        method: str,
        url: str,
        what: str,
        *,
        params: dict[str, int] | None = None,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        try:
            response = self.client.request(
                method,
                url,
                params=params,
                headers=headers,
                content=content,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"{what}: {exc.__class__.__name__}: {exc}") from exc
        raise_for_status(response, what)
        return response

    def desired(self, *, wait_s: float = 0, etag: str | None = None) -> DesiredAnswer:
        """The desired state; never reads more than the protocol's cap for one document."""
        headers = {"If-None-Match": etag} if etag else {}
        wait = max(0, int(wait_s))
        what = "fetching the desired state"
        try:
            with self.client.stream(
                "GET",
                f"/v1/devices/{self.device_id}/desired",
                params={"wait_s": wait},
                headers=headers,
                timeout=httpx.Timeout(self.timeout_s, read=wait + self.timeout_s),
            ) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_DESIRED_BYTES:
                        raise ServerError(f"{what}: the document exceeds {MAX_DESIRED_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise TransportError(f"{what}: {exc.__class__.__name__}: {exc}") from exc
        raise_for_status(httpx.Response(response.status_code, content=bytes(body)), what)
        if response.status_code == 200:
            return DesiredAnswer(200, bytes(body), response.headers.get("ETag"))
        return DesiredAnswer(response.status_code, None, etag)

    def post_reports(self, bodies: list[bytes]) -> None:
        """POST report batches (each body is one canonical report)."""
        for start in range(0, len(bodies), MAX_REPORTS_PER_POST):
            chunk = bodies[start : start + MAX_REPORTS_PER_POST]
            payload = b'{"reports":[' + b",".join(chunk) + b"]}"
            self._request(
                "POST",
                f"/v1/devices/{self.device_id}/reports",
                "sending reports",
                content=payload,
                headers={"Content-Type": "application/json"},
            )

    def root(self, version: int) -> bytes | None:
        """Root metadata version ``version``, or None when the server has none (404)."""
        try:
            response = self.client.get(f"/v1/metadata/root/{int(version)}")
        except httpx.HTTPError as exc:
            raise TransportError(f"fetching root v{version}: {exc}") from exc
        if response.status_code == 404:
            return None
        raise_for_status(response, f"fetching root v{version}")
        return response.content

    def close(self) -> None:
        self.client.close()


__all__ = [
    "MAX_REPORTS_PER_POST",
    "ControlPlane",
    "DesiredAnswer",
    "raise_for_status",
    "tls_verify",
]
