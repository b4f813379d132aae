"""How desired states reach the device and reports leave it: one small interface.

Theory of operation. A :class:`Transport` has two duties and no opinions:
:meth:`~Transport.receive` returns the next desired-state document (raw
bytes; the updater verifies them) or None after at most about ``timeout_s``,
and :meth:`~Transport.send` delivers reports in order and returns how many of
them the other side *confirmed* (MQTT PUBACK at QoS 1, HTTP 200), so the
outbox removes exactly those. :meth:`~Transport.publish` does the same for
the other device channels: drift summaries (one binary payload each) and
telemetry reports (canonical JSON each), confirmed the same way. Both raise
:class:`~agent.errors.TransportError` when the link is down; the caller backs
off and tries again. ``current`` names the path in use (``mqtt``, ``http``,
or ``none`` while nothing is connected).

Three implementations:

* :class:`~agent.transport.mqtt.MqttTransport`: persistent session, QoS 1,
  retained desired state, presence with a last will; MQTT 5 with a fall back
  to 3.1.1; one HTTP reconciliation of the desired state per (re)connect.
* :class:`~agent.transport.http.HttpTransport`: long-poll with ETag, batched
  report POSTs.
* :class:`AutoTransport`: MQTT while the broker is reachable; once it has
  been unreachable for ``fallback_after_s``, HTTP long-polling, while MQTT
  keeps reconnecting in the background; back to MQTT as soon as it connects.

Decision table of :class:`AutoTransport` (``down`` = seconds since MQTT was
last connected, or since start if it never was):

=================  ===================  =====================================
MQTT connected     down                 receive / send go to
=================  ===================  =====================================
yes                --                   MQTT
no                 < fallback_after_s   MQTT (wait; send raises, retried later)
no                 >= fallback_after_s  HTTP
=================  ===================  =====================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from agent.errors import TransportError
from fleetcore.protocol import Channel


class Transport(Protocol):
    name: str

    @property
    def current(self) -> str: ...

    def start(self) -> None: ...

    def close(self) -> None: ...

    def receive(self, timeout_s: float) -> bytes | None: ...

    def send(self, reports: Sequence[bytes]) -> int: ...

    def publish(self, channel: Channel, payloads: Sequence[bytes]) -> int:
        """Deliver ``payloads`` on ``channel`` (drift or telemetry); how many were confirmed."""
        ...


class BrokerLink(Transport, Protocol):
    """What :class:`AutoTransport` needs to know about the MQTT side."""

    @property
    def connected(self) -> bool: ...

    def down_for_s(self) -> float:
        """Seconds since the broker connection was last up (or since start)."""
        ...


class AutoTransport:
    """MQTT first, HTTP long-poll while the broker is unreachable."""

    name = "auto"

    def __init__(
        self,
        mqtt: BrokerLink,
        http: Transport,
        *,
        fallback_after_s: float,
        idle_wait: Callable[[float], None] | None = None,
    ) -> None:
        self.mqtt, self.http = mqtt, http
        self.fallback_after_s = fallback_after_s
        self._idle_wait = idle_wait

    def _route(self) -> Transport | None:
        if self.mqtt.connected:
            return self.mqtt
        if self.mqtt.down_for_s() >= self.fallback_after_s:
            return self.http
        return None

    @property
    def current(self) -> str:
        route = self._route()
        return "none" if route is None else route.current

    def start(self) -> None:
        self.mqtt.start()
        self.http.start()

    def close(self) -> None:
        self.mqtt.close()
        self.http.close()

    def receive(self, timeout_s: float) -> bytes | None:
        route = self._route()
        if route is None:  # within the grace period: wait for the broker
            return self.mqtt.receive(min(timeout_s, 1.0))
        return route.receive(timeout_s)

    def send(self, reports: Sequence[bytes]) -> int:
        route = self._route()
        if route is None:
            raise TransportError("waiting for the broker connection")
        return route.send(reports)

    def publish(self, channel: Channel, payloads: Sequence[bytes]) -> int:
        route = self._route()
        if route is None:
            raise TransportError("waiting for the broker connection")
        return route.publish(channel, payloads)


__all__ = ["AutoTransport", "BrokerLink", "Transport"]
