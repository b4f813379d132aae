"""A cap on request bodies, enforced before the application sees a byte.

Theory of operation. FastAPI reads and parses a JSON body before any
dependency runs, authentication included, so without a cap an anonymous
client could make a worker hold an arbitrarily large body in memory.
:class:`BodyLimitMiddleware` sits in front of the routes and, for every HTTP
request except the exempt ones, does two things:

* a declared ``Content-Length`` over the limit is answered with 413 at once,
  before the body is read (so a server never sends ``100 Continue`` for it);
* otherwise the body is buffered, at most ``limit + 1`` bytes of it: a body
  that grows past the limit (chunked, or a lying client) is answered with 413
  and the application is never called; a body within the limit is replayed
  to the application as one message.

Invariants: the application never receives more than ``limit`` body bytes;
the middleware holds at most ``limit + 1`` of them per request. The artifact
upload is exempt: it streams to disk under its own ``max_upload_bytes`` cap.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.api.errors import error_response

#: (method, path) pairs that bring their own cap.
STREAMED_UPLOADS = frozenset({("POST", "/v1/artifacts")})


def _route_path(scope: Scope) -> str:
    """The path the router matches: ``path`` without a mount's ``root_path``."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


class BodyLimitMiddleware:
    """413 for any request body over ``max_bytes``, except the exempt routes."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        exempt: Collection[tuple[str, str]] = STREAMED_UPLOADS,
    ) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], _route_path(scope)) in self.exempt:
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "").strip()
        if self._over(declared):
            shown = declared if len(declared) <= 20 else f"of {len(declared)} digits"
            await self._refuse(f"Content-Length {shown}", scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # nobody is left to answer
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse("the request body", scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)

    def _over(self, declared: str) -> bool:
        # Bound the digits before int(): huge strings are slow and may raise.
        if not (declared.isascii() and declared.isdigit()):
            return False  # malformed: the server refuses it; the buffer caps it anyway
        digits = declared.lstrip("0")
        return len(digits) > len(str(self.max_bytes)) or int(digits or "0") > self.max_bytes

    async def _refuse(self, what: str, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"{what} is over the request limit of {self.max_bytes} bytes"
        response = error_response(413, "payload_too_large", message)
        # The rest of the body is never read, so the connection cannot be reused.
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the buffered body once, then the server's messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


__all__ = ["STREAMED_UPLOADS", "BodyLimitMiddleware"]
