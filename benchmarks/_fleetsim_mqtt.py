"""Thousands of real paho MQTT clients driven by one thread, one ``epoll`` selector.

Theory of operation: a thread per paho client (``loop_start``) would cost
10,000 threads for 10,000 devices, so each simulator process drives its
clients through paho's external-loop interface instead: the socket callbacks
(``on_socket_open``/``close``/``register_write``/``unregister_write``) keep a
:mod:`selectors` registration per client, and :meth:`Loop.run_once` calls
``loop_read``/``loop_write`` for the sockets that are ready, ``loop_misc``
(keepalive) for every client every couple of seconds, and the timers that are
due. Other threads hand work in through :meth:`Loop.call_soon_threadsafe`
(a queue and a wake-up socket).

A :class:`Session` is one device's connection, made as the agent's
``agent.transport.mqtt`` makes it: client id and username = device id, MQTT 5
with ``clean_start=False`` and a one-week session expiry (a persistent
session), the retained ``presence`` offline as last will, and on every
CONNACK a QoS 1 subscription to its ``desired`` topic and a retained
``presence`` online. Reports are published at QoS 1 on ``status``; while
disconnected they wait in the session's outbox, in order, and go out after
the next CONNACK. A dropped connection is retried after about a second; a
refused CONNACK (the broker has not yet reloaded its password file after the
enrollment) after ``refused_retry_s``.

Connecting is paced: at most ``connect_window`` CONNECTs per process wait for
their CONNACK at once, so 10,000 devices starting together never overflow
the broker's listen backlog (a dropped SYN would stall the blocking TCP
connect for a second).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import queue
import random
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fleetcore import __version__
from fleetcore.protocol import Channel, Presence, topic

SESSION_EXPIRY_S = 7 * 24 * 3600  # as agent.transport.mqtt
MISC_EVERY_S = 2.0
CONNECT_TIMEOUT_S = 30.0
_WAKE = object()


class Loop:
    """A selector, timers and a thread-safe call queue, run by one thread."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self.sessions: list[Session] = []
        self._misc_at = 0.0
        self.readers: dict[int, Callable[[], None]] = {}

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay_s, next(self._order), fn))

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        self._calls.put(fn)
        with contextlib.suppress(BlockingIOError):
            self._wake_w.send(b"x")

    def add_reader(self, fileobj: Any, fn: Callable[[], None]) -> None:
        self.selector.register(fileobj, selectors.EVENT_READ, fn)

    def run_once(self, max_wait_s: float = 0.2) -> None:
        wait = max_wait_s
        if self._timers:
            wait = min(wait, max(0.0, self._timers[0][0] - time.monotonic()))
        for key, mask in self.selector.select(wait):
            data = key.data
            if data is _WAKE:
                with contextlib.suppress(BlockingIOError):
                    self._wake_r.recv(4096)
            elif isinstance(data, Session):
                data.ready(mask)
            else:
                data()
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                break
            call()
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            fn()
        if now >= self._misc_at:
            self._misc_at = now + MISC_EVERY_S
            for session in self.sessions:
                session.misc(now)

    def close(self) -> None:
        for session in self.sessions:
            session.close()
        for _ in range(20):  # let the DISCONNECTs and offline presences go out
            self.run_once(0.05)
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()


@dataclass
class SessionStats:
    connects: int = 0
    refused: int = 0
    dropped: int = 0
    published: int = 0
    acked: int = 0
    received: int = 0


class Connector:
    """Paces CONNECTs: at most ``window`` wait for their CONNACK at once."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.waiting: deque[Session] = deque()
        self.in_flight = 0

    def request(self, session: Session) -> None:
        self.waiting.append(session)
        self.pump()

    def done(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self.pump()

    def pump(self) -> None:
        while self.waiting and self.in_flight < self.window:
            session = self.waiting.popleft()
            if session.start_connect():
                self.in_flight += 1


class Session:
    """One device's MQTT connection (see the module docstring)."""

    def __init__(
        self,
        loop: Loop,
        connector: Connector,
        *,
        device_id: str,
        password: str,
        host: str,
        port: int,
        on_desired: Callable[[bytes], None],
        stats: SessionStats,
        keepalive_s: int = 60,
        refused_retry_s: float = 1.0,
    ) -> None:
        self.loop, self.connector, self.stats = loop, connector, stats
        self.device_id, self.host, self.port = device_id, host, port
        self.on_desired = on_desired
        self.keepalive_s, self.refused_retry_s = keepalive_s, refused_retry_s
        self.desired_topic = topic(device_id, Channel.DESIRED)
        self.status_topic = topic(device_id, Channel.STATUS)
        self.presence_topic = topic(device_id, Channel.PRESENCE)
        self.connected = False
        self.connecting_since: float | None = None
        self.away_until = 0.0  # a flap keeps the device away until then
        self.stopping = False
        self.started = False
        self._configured = False
        self.outbox: deque[bytes] = deque()
        self.sock: Any = None
        self.client = self._make_client(password)
        loop.sessions.append(self)

    def _make_client(self, password: str) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.device_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=False,
        )
        client.username_pw_set(self.device_id, password)
        client.will_set(self.presence_topic, self._presence(False), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    def _presence(self, online: bool) -> bytes:
        when = datetime.now(timezone.utc).replace(microsecond=0)
        return Presence(self.device_id, online, when, __version__).encode()

    # -- connecting ------------------------------------------------------------------

    def start(self) -> None:
        self.started = True
        self.connector.request(self)

    def start_connect(self) -> bool:
        """Open the TCP connection and send CONNECT; False if it could not even start."""
        if self.stopping or self.connected:
            return False
        try:
            if self._configured:
                self.client.reconnect()
            else:
                self._configured = True
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = SESSION_EXPIRY_S
                self.client.connect(
                    self.host, self.port, self.keepalive_s, clean_start=False, properties=props
                )
        except OSError:
            self.loop.call_later(self._jitter(1.0), lambda: self.connector.request(self))
            return False
        self.connecting_since = time.monotonic()
        return True

    @staticmethod
    def _jitter(base_s: float) -> float:
        return base_s * random.uniform(0.5, 1.5)  # noqa: S311 - spreading retries, not secrets

    def _retry(self, delay_s: float) -> None:
        if self.stopping:
            return
        delay_s = max(delay_s, self.away_until - time.monotonic())
        self.loop.call_later(self._jitter(delay_s), lambda: self.connector.request(self))

    def drop(self, away_s: float) -> None:
        """Lose the connection abruptly (no DISCONNECT: the broker sends the will)."""
        self.away_until = time.monotonic() + away_s
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.stopping = True
        if self.connected:
            self.client.publish(self.presence_topic, self._presence(False), qos=1, retain=True)
            self.client.disconnect()

    # -- sending --------------------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        self.outbox.append(payload)
        if self.connected:
            self._flush()

    def _flush(self) -> None:
        while self.outbox and self.connected:
            self.client.publish(self.status_topic, self.outbox.popleft(), qos=1)
            self.stats.published += 1

    # -- the selector's side -------------------------------------------------------------------

    def ready(self, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            self.client.loop_read()
        if mask & selectors.EVENT_WRITE and self.client.socket() is not None:
            self.client.loop_write()

    def misc(self, now: float) -> None:
        if self.client.socket() is None:
            return
        since = self.connecting_since
        if since is not None and now - since > CONNECT_TIMEOUT_S:
            self.drop(0.0)  # no CONNACK: try again
            return
        self.client.loop_misc()

    def _on_socket_open(self, _c: Any, _u: Any, sock: Any) -> None:
        self.sock = sock
        self.loop.selector.register(sock, selectors.EVENT_READ, self)

    def _on_socket_close(self, _c: Any, _u: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.loop.selector.unregister(sock)
        self.sock = None

    def _on_register_write(self, _c: Any, _u: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.loop.selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, self)

    def _on_unregister_write(self, _c: Any, _u: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.loop.selector.modify(sock, selectors.EVENT_READ, self)

    # -- paho callbacks --------------------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any
    ) -> None:
        was_waiting = self.connecting_since is not None
        self.connecting_since = None
        if was_waiting:
            self.connector.done()
        if reason.is_failure:
            self.stats.refused += 1
            return  # the broker closes the connection; _on_disconnect retries
        self.connected = True
        self.stats.connects += 1
        client.subscribe(self.desired_topic, qos=1)
        client.publish(self.presence_topic, self._presence(True), qos=1, retain=True)
        self.stats.published += 1
        self._flush()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if self.connecting_since is not None:
            self.connecting_since = None
            self.connector.done()
        refused = not self.connected
        self.connected = False
        if self.stopping:
            return
        if refused:
            self._retry(self.refused_retry_s)
        else:
            self.stats.dropped += 1
            self._retry(1.0)

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.desired_topic:
            self.stats.received += 1
            self.on_desired(bytes(message.payload))

    def _on_publish(self, _c: Any, _u: Any, _mid: int, _rc: ReasonCode, _p: Any) -> None:
        self.stats.acked += 1


__all__ = ["Connector", "Loop", "Session", "SessionStats"]
