"""Where the local inference API listens: address parsing and the socket servers.

Private to :mod:`agent.localapi`. :func:`parse_listen` refuses non-loopback
hosts unless asked; the servers remember their open connections so ``stop``
can close idle keep-alive ones, and a Unix socket gets its mode (0660) before
``listen`` and never replaces a file that is not a stale socket.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import socketserver
import stat
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("agent.localapi")


def parse_listen(listen: str, *, allow_remote: bool = False) -> tuple[str, int] | Path:
    """``"HOST:PORT"`` -> (ip, port); ``"unix:/path"`` -> Path. Refuses non-loopback hosts."""
    if listen.startswith("unix:"):
        path = listen[len("unix:") :]
        if not path:
            raise ValueError("unix: needs a socket path, e.g. unix:/run/edgefleet/agent.sock")
        return Path(path)
    host, sep, port_text = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"listen address {listen!r} is not HOST:PORT or unix:/path")
    host = "127.0.0.1" if host == "localhost" else host
    try:
        address = ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"listen host {host!r} must be an IP address or localhost") from exc
    if not address.is_loopback and not allow_remote:
        raise ValueError(f"refusing to listen on {host}: not loopback (allow_remote=True permits)")
    return str(address), int(port_text)


class _Tracking:
    """Mix-in: remember open connections so ``stop`` can close idle keep-alive ones."""

    daemon_threads = True
    block_on_close = False
    connections: set[socket.socket]
    lock: threading.Lock

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.connections.add(request)
        super().process_request(request, client_address)  # type: ignore[misc]

    def shutdown_request(self, request: Any) -> None:
        with self.lock:
            self.connections.discard(request)
        super().shutdown_request(request)  # type: ignore[misc]

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("local API: connection error", exc_info=True)


class TcpServer(_Tracking, socketserver.ThreadingTCPServer):
    allow_reuse_address = True


class UnixServer(_Tracking, socketserver.ThreadingUnixStreamServer):
    mode = 0o660

    def server_bind(self) -> None:
        path = Path(str(self.server_address))
        _remove_stale_socket(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        super().server_bind()
        path.chmod(self.mode)  # before listen(): no connection is accepted until then


def _remove_stale_socket(path: Path) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise OSError(f"{path} exists and is not a socket; refusing to replace it")
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody answers: left over from a previous run
            return
    raise OSError(f"another process is serving on {path}")


__all__ = ["TcpServer", "UnixServer", "parse_listen"]
