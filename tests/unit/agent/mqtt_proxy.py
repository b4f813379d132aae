"""A TCP proxy in front of a real broker that can play a 3.1.1-only broker or an outage.

It reads each client's CONNECT packet. In ``refuse_v5`` mode a CONNECT with
protocol level 5 gets the answer a 3.1.1 broker gives (CONNACK return code 1,
"unacceptable protocol version") and the connection is closed; in ``drop_v5``
mode it is closed without any CONNACK (what a broker does that cannot parse
a v5 CONNECT at all, such as amqtt). Every other CONNECT is forwarded to the
real broker and the connection is piped both ways. ``block()`` closes every
open connection and refuses new ones until ``unblock()``: a broker outage.
"""

from __future__ import annotations

import contextlib
import socket
import threading


def _read_packet(sock: socket.socket) -> tuple[bytes, bytes]:
    first = sock.recv(1)
    if not first:
        raise ConnectionError("closed")
    header, length, multiplier = bytearray(first), 0, 1
    while True:
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError("closed")
        header += byte
        length += (byte[0] & 0x7F) * multiplier
        multiplier *= 128
        if not byte[0] & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return bytes(header) + body, body


class MqttProxy:
    def __init__(self, upstream_port: int, mode: str = "forward") -> None:
        self.upstream_port, self.mode = upstream_port, mode
        self.levels: list[int] = []  # protocol level of every CONNECT seen
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._blocked = False
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self._listener.getsockname()[1]}"

    def block(self) -> None:
        with self._lock:
            self._blocked = True
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
            self._open.clear()

    def unblock(self) -> None:
        with self._lock:
            self._blocked = False

    def close(self) -> None:
        self.block()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._blocked:
                    client.close()
                    continue
                self._open.add(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            packet, body = _read_packet(client)
            level = body[6]
            self.levels.append(level)
            if level == 5 and self.mode == "refuse_v5":
                client.sendall(b"\x20\x02\x00\x01")
                client.close()
                return
            if level == 5 and self.mode == "drop_v5":
                client.close()
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except (OSError, ConnectionError, IndexError):
            client.close()
            return
        with self._lock:
            self._open.add(upstream)
        upstream.sendall(packet)
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        self._pipe(client, upstream)

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
