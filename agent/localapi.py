"""The local inference API: HTTP/1.1 on loopback TCP or a Unix socket, stdlib only.

Theory of operation. :class:`LocalApi` binds a threading server from
:mod:`socketserver` (one thread per connection, keep-alive) and answers with a
:class:`http.server.BaseHTTPRequestHandler` whose every response is written in
one ``send`` (status line, headers and body together), so Nagle's algorithm
and delayed ACKs never add latency. Each request pins the active model once
(:meth:`ModelHost.current`): its specs convert the body, it runs the feeds, and
its identity goes into the answer, so a hot swap never fails a request.

Routes::

    POST /v1/infer    {"inputs": {"name": [[...]]}} or {"inputs": [[...]]}
                      -> {"outputs": {"name": [[...]]}, "model": {...},
                          "request_id": "..."}
                      or a raw .npy body (Content-Type: application/x-npy,
                      single-input models); the answer is the first output as
                      .npy when the request says Accept: application/x-npy
                      (the request id then in the X-Request-Id header)
    POST /v1/feedback {"request_id": "...", "label": 2 | "class" | [...]}
                      -> {"rows", "correct", "counted", "captured"};
                      404 unknown or expired id, 409 already given, 422 bad label
    GET  /v1/model    the ModelInfo, with input and output specs
    GET  /v1/health   200 with a model, 503 without; status() merged in

Every successful inference is handed to the request log
(:class:`agent.feedback.RequestLog`: drift probe, capture, request ids) when
one is configured; a failure there is logged and never fails the inference.

Errors are ``{"error": {"code", "message"}}``: 400 bad input, 404 unknown
route, 405 wrong method, 411 no Content-Length, 413 body over the cap, 500 a
model failure, 503 no model.

Invariants: nothing but loopback addresses and Unix sockets are bound unless
``allow_remote`` is set; a Unix socket gets its mode (0660) before ``listen``,
so no client ever connects through looser permissions; no body over the cap is
read; ``.npy`` bodies are parsed header first and never unpickled or
allocated beyond the bytes received; no request, however malformed, stops the
server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from agent._localserver import TcpServer, UnixServer, parse_listen
from agent._localwire import NPY, feeds_from_json, npy_array, npy_bytes, outputs_to_json
from agent.feedback import FeedbackError, RequestLog
from agent.serving import ModelHost, ModelInfo
from agent.serving_errors import InputError, ServingError
from fleetcore.errors import RuntimeLoadError

log = logging.getLogger(__name__)

#: Largest request body read, in bytes (default of ``max_body_bytes``).
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
#: Idle keep-alive connections are closed after this many seconds.
IDLE_TIMEOUT_S = 60.0
#: How often the accept loop looks for a stop request (bounds how long stop() takes).
STOP_POLL_S = 0.1


class _HttpError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "edgefleet-agent"
    timeout = IDLE_TIMEOUT_S
    api: LocalApi  # set on the per-server subclass
    extra_headers: str = ""  # set by a route for its answer only

    def _any_method(self) -> None:
        self._dispatch(self.command)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _any_method  # noqa: N815

    def _dispatch(self, method: str) -> None:
        api = self.api
        self.extra_headers = ""
        route = _ROUTES.get(self.path.partition("?")[0])
        ctype = "application/json"
        try:
            if route is None:
                raise _HttpError(404, "not_found", f"no route {self.path.partition('?')[0]}")
            if method != route[0]:
                raise _HttpError(405, "method_not_allowed", f"use {route[0]} on this route")
            status, body, ctype = route[1](api, self)
        except _HttpError as exc:
            status, body = exc.status, _error_body(exc.code, exc.message)
        except FeedbackError as exc:
            status, body = exc.status, _error_body(exc.code, exc.message)
        except ServingError as exc:
            status, body = exc.http_status, _error_body(exc.code, exc.message)
        except RuntimeLoadError as exc:
            status, body = 500, _error_body("model_error", str(exc))
        except Exception as exc:
            log.exception("local API: unexpected failure on %s %s", method, self.path)
            status, body = 500, _error_body("internal", type(exc).__name__)
        if method != "POST" or route is None or method != route[0]:
            self._discard_body()
        self._reply(status, body, ctype)

    def read_body(self) -> bytes:
        """The request body, at most ``max_body_bytes``; a refusal closes the connection."""
        text, cap = self.headers.get("Content-Length"), self.api.max_body_bytes
        if text is None or "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise self._refuse(411, "length_required", "a body needs a Content-Length")
        if not text.strip().isdigit():
            raise self._refuse(400, "bad_request", "Content-Length is not a number")
        if int(text) > cap:
            raise self._refuse(413, "too_large", f"the body is over {cap} bytes")
        body = self.rfile.read(int(text))
        if len(body) != int(text):
            raise self._refuse(400, "bad_request", "the body ended early")
        return body

    def _refuse(self, status: int, code: str, message: str) -> _HttpError:
        self.close_connection = True  # what is left of the body stays unread
        return _HttpError(status, code, message)

    def _discard_body(self) -> None:
        text = self.headers.get("Content-Length", "0") if self.headers else "0"
        if not text.strip().isdigit() or int(text) > self.api.max_body_bytes:
            self.close_connection = True
        elif int(text):
            self.rfile.read(int(text))

    def _reply(self, status: int, body: bytes, ctype: str) -> None:
        phrase = _PHRASES.get(status, "")
        head = (
            f"HTTP/1.1 {status} {phrase}\r\nServer: {self.server_version}\r\n"
            f"Date: {_http_date()}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"{self.extra_headers}"
        )
        if self.close_connection:
            head += "Connection: close\r\n"
        elif getattr(self, "request_version", "") == "HTTP/1.0":
            head += "Connection: keep-alive\r\n"
        payload = b"" if self.command == "HEAD" else body  # HEAD: headers only
        self.wfile.write(head.encode("latin-1") + b"\r\n" + payload)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors found by the stdlib parser (bad request line, long headers) in our format."""
        self.close_connection = True
        reason = message or _PHRASES.get(code, "error")
        self._reply(code, _error_body("bad_request", reason), "application/json")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("local API: " + format, *args)


_PHRASES = {s.value: s.phrase for s in HTTPStatus}
_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    global _date_cache  # noqa: PLW0603  (a one-entry cache, one string per second)
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def _infer(api: LocalApi, request: _Handler) -> tuple[int, bytes, str]:
    body = request.read_body()
    model = api.host.current()
    if request.headers.get("Content-Type", "").split(";")[0].strip().lower() == NPY:
        if len(model.info.inputs) != 1:
            raise InputError(".npy bodies work only for single-input models")
        feeds = {model.info.inputs[0].name: npy_array(body)}
    else:
        feeds = feeds_from_json(body, model.info.inputs)
    outputs = model.infer(feeds)
    request_id = _observe(api.requests, model.info, feeds, outputs)
    if NPY in request.headers.get("Accept", ""):
        if request_id is not None:
            request.extra_headers = f"X-Request-Id: {request_id}\r\n"
        return 200, npy_bytes(outputs[model.info.outputs[0].name]), NPY
    answer: dict[str, Any] = {"outputs": outputs_to_json(outputs), "model": model.info.identity()}
    if request_id is not None:
        answer["request_id"] = request_id
    return 200, json.dumps(answer).encode(), "application/json"


def _observe(
    requests: RequestLog | None, info: ModelInfo, feeds: dict[str, Any], outputs: dict[str, Any]
) -> str | None:
    if requests is None:
        return None
    try:
        return requests.observe(info, feeds, outputs)
    except Exception:  # the probe must never fail an inference that succeeded
        log.exception("local API: the request log failed; the answer goes without a request id")
        return None


def _feedback(api: LocalApi, request: _Handler) -> tuple[int, bytes, str]:
    body = request.read_body()
    if api.requests is None:
        raise _HttpError(404, "feedback_off", "feedback is off ([drift] enabled = false)")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _HttpError(400, "bad_request", "the body is not valid JSON") from exc
    if not isinstance(doc, dict) or "request_id" not in doc or "label" not in doc:
        raise _HttpError(422, "bad_request", 'the body must be {"request_id": ..., "label": ...}')
    result = api.requests.feedback(doc["request_id"], doc["label"])
    return 200, json.dumps(result.to_dict()).encode(), "application/json"


def _model(api: LocalApi, request: _Handler) -> tuple[int, bytes, str]:
    return 200, json.dumps(api.host.current().info.to_dict()).encode(), "application/json"


def _health(api: LocalApi, request: _Handler) -> tuple[int, bytes, str]:
    info, figures = api.host.info, api.host.stats.snapshot()
    doc: dict[str, Any] = {}
    if api.status is not None:
        try:
            doc.update(api.status())
        except Exception as exc:
            doc["status_error"] = f"{type(exc).__name__}: {exc}"
    doc["status"] = "ok" if info is not None else "no_model"
    doc["model"] = None if info is None else info.to_dict()
    doc["serving"] = {k: v for k, v in figures.to_dict().items() if k != "histogram"}
    return (200 if info is not None else 503), json.dumps(doc).encode(), "application/json"


_ROUTES: dict[str, tuple[str, Callable[[LocalApi, _Handler], tuple[int, bytes, str]]]] = {
    "/v1/infer": ("POST", _infer),
    "/v1/feedback": ("POST", _feedback),
    "/v1/model": ("GET", _model),
    "/v1/health": ("GET", _health),
}


class LocalApi:
    """The local inference HTTP API over ``host``; ``start`` serves on a background thread."""

    def __init__(
        self,
        host: ModelHost,
        listen: str,
        status: Callable[[], dict[str, Any]] | None = None,
        *,
        allow_remote: bool = False,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        socket_mode: int = 0o660,
        requests: RequestLog | None = None,
    ) -> None:
        self.host = host
        self.status = status
        self.requests = requests
        self.max_body_bytes = max_body_bytes
        self._where = parse_listen(listen, allow_remote=allow_remote)
        self._mode = socket_mode
        self._server: TcpServer | UnixServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve on a daemon thread; OSError if the address cannot be bound."""
        if self._server is not None:
            raise RuntimeError("the local API is already running")
        tcp = not isinstance(self._where, Path)
        handler = type("Handler", (_Handler,), {"api": self, "disable_nagle_algorithm": tcp})
        server: TcpServer | UnixServer
        if isinstance(self._where, Path):
            server_cls = type("UnixServer", (UnixServer,), {"mode": self._mode})
            server = server_cls(str(self._where), handler, bind_and_activate=False)
        else:
            family = socket.AF_INET6 if ":" in self._where[0] else socket.AF_INET
            server_cls = type("TcpServer", (TcpServer,), {"address_family": family})
            server = server_cls(self._where, handler, bind_and_activate=False)
        server.connections, server.lock = set(), threading.Lock()
        try:
            server.server_bind()
            server.server_activate()
        except BaseException:
            server.server_close()
            raise
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": STOP_POLL_S},
            name="local-api",
            daemon=True,
        )
        self._thread.start()

    @property
    def address(self) -> str:
        """``"HOST:PORT"`` (the bound port) or ``"unix:/path"``."""
        if isinstance(self._where, Path):
            return f"unix:{self._where}"
        if self._server is None:
            return f"{self._where[0]}:{self._where[1]}"
        host, port = self._where[0], self._server.socket.getsockname()[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def stop(self) -> None:
        """Stop serving, close open connections and remove the socket file."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with server.lock:
            for conn in list(server.connections):
                with contextlib.suppress(OSError):  # already closed by the peer
                    conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if isinstance(self._where, Path):
            self._where.unlink(missing_ok=True)

    def __enter__(self) -> LocalApi:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["DEFAULT_MAX_BODY_BYTES", "NPY", "LocalApi", "parse_listen"]
