"""The MQTT transport (paho-mqtt 2.x): a doorbell with a persistent session.

Theory of operation. One supervisor thread owns the paho client and runs its
network loop; it connects, loops until the connection drops, waits with
exponential backoff (up to ``reconnect_max_s``) and connects again. The
session is persistent (client id = device id; MQTT 5 ``clean_start=False``
with a one-week session expiry, MQTT 3.1.1 ``clean_session=False``), so QoS 1
messages published while the device was offline are delivered when it
returns. Username = device id, password from the identity file.

On every successful CONNACK the agent subscribes to its ``desired`` topic
(QoS 1; the broker sends the retained desired state), publishes retained
``presence`` online (the last will, set before connecting, says offline), and
schedules one HTTP GET of the desired state without waiting, in case the
broker lost its retained messages; :meth:`receive` performs it in the
caller's thread. Duplicates this produces are dropped by the updater.

Protocol version: MQTT 5 first. A broker that speaks only 3.1.1 either
answers CONNACK "unsupported protocol version" or closes the connection
before any CONNACK (amqtt cannot parse a v5 CONNECT); either way the next
attempt uses 3.1.1, without waiting. The first version that connects is kept
for the life of the process.

:meth:`send` publishes each report at QoS 1 on ``status`` and waits for its
PUBACK; it returns how many were confirmed, in order. :meth:`publish` does
the same on ``drift`` (one encoded summary per message) and ``telemetry``. On shutdown the agent
publishes presence offline itself and disconnects cleanly (a clean
disconnect does not trigger the will).
"""

from __future__ import annotations

import logging
import queue
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import ConfigError, TransportError
from fleetcore import __version__
from fleetcore.protocol import Channel, Presence, topic

log = logging.getLogger(__name__)
#: MQTT 5 session expiry: how long the broker keeps the session of an offline device.
SESSION_EXPIRY_S = 7 * 24 * 3600
_UNSUPPORTED_PROTOCOL = 132
_BAD_CREDENTIALS = (134, 135, 4, 5)
PUBLISH_TIMEOUT_S = 10.0


class Outcome(Enum):
    UNREACHABLE = "unreachable"
    PROTOCOL = "protocol"  # the broker does not speak this MQTT version
    REFUSED = "refused"  # bad credentials or not authorized
    DROPPED = "dropped"  # was connected, then lost the connection
    STOPPED = "stopped"


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(f"broker URL {url!r} must look like mqtt://host:1883 or mqtts://...")
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname, parts.port or (8883 if tls else 1883), tls)


class MqttTransport:
    name = "mqtt"

    def __init__(
        self,
        *,
        device_id: str,
        url: str,
        username: str,
        password: str,
        keepalive_s: int = 60,
        connect_timeout_s: float = 10.0,
        reconnect_max_s: float = 60.0,
        tls_ca_path: str | None = None,
        reconcile: Callable[[], bytes | None] | None = None,
        protocols: Sequence[MQTTProtocolVersion] = (
            MQTTProtocolVersion.MQTTv5,
            MQTTProtocolVersion.MQTTv311,
        ),
    ) -> None:
        self.device_id = device_id
        self.address = BrokerAddress.parse(url)
        self.username, self._password = username, password
        self.keepalive_s, self.connect_timeout_s = keepalive_s, connect_timeout_s
        self.reconnect_max_s, self.tls_ca_path = reconnect_max_s, tls_ca_path
        self._reconcile, self._protocols = reconcile, list(protocols)
        self._protocol_index = 0
        self.protocol: MQTTProtocolVersion | None = None  # the version that connected
        self._inbox: queue.Queue[bytes] = queue.Queue()
        self._up = threading.Event()
        self._stop = threading.Event()
        self._reconcile_due = threading.Event()
        self._client: mqtt.Client | None = None
        self._thread: threading.Thread | None = None
        self._down_since = time.monotonic()
        self._connack: ReasonCode | None = None
        self.desired_topic = topic(device_id, Channel.DESIRED)
        self.status_topic = topic(device_id, Channel.STATUS)
        self.presence_topic = topic(device_id, Channel.PRESENCE)

    # -- Transport ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    @property
    def current(self) -> str:
        return "mqtt" if self.connected else "none"

    def down_for_s(self) -> float:
        return 0.0 if self.connected else time.monotonic() - self._down_since

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._supervise, name="mqtt", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        client = self._client
        if client is not None and self.connected:
            try:
                info = client.publish(self.presence_topic, self._presence(False), 1, True)
                info.wait_for_publish(2.0)
            except (RuntimeError, ValueError):
                pass
            client.disconnect()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def receive(self, timeout_s: float) -> bytes | None:
        if self._reconcile_due.is_set() and self._reconcile is not None:
            self._reconcile_due.clear()
            try:
                document = self._reconcile()
            except TransportError as exc:
                log.warning("could not reconcile the desired state over HTTP: %s", exc)
            else:
                if document is not None:
                    return document
        try:
            return self._inbox.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return None

    def send(self, reports: Sequence[bytes]) -> int:
        return self._publish_all(self.status_topic, reports, "report")

    def publish(self, channel: Channel, payloads: Sequence[bytes]) -> int:
        if channel not in (Channel.DRIFT, Channel.TELEMETRY):
            raise ValueError(f"the agent does not publish on {channel.value}")
        return self._publish_all(topic(self.device_id, channel), payloads, channel.value)

    def _publish_all(self, where: str, bodies: Sequence[bytes], what: str) -> int:
        client = self._client
        if client is None or not self.connected:
            raise TransportError("not connected to the broker")
        confirmed = 0
        for body in bodies:
            info = client.publish(where, body, qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            try:
                info.wait_for_publish(PUBLISH_TIMEOUT_S)
            except (RuntimeError, ValueError):
                break
            if not info.is_published():
                break
            confirmed += 1
        if confirmed == 0 and bodies:
            raise TransportError(f"the broker did not acknowledge the {what}")
        return confirmed

    # -- connection supervisor ------------------------------------------------------------

    def _presence(self, online: bool) -> bytes:
        now = datetime.now(timezone.utc).replace(microsecond=0)
        return Presence(self.device_id, online, now, __version__).encode()

    def _supervise(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            version = self._protocols[self._protocol_index]
            outcome = self._session(version)
            if outcome is Outcome.STOPPED:
                return
            if outcome is Outcome.PROTOCOL and self.protocol is None and len(self._protocols) > 1:
                self._protocol_index = (self._protocol_index + 1) % len(self._protocols)
                log.info("broker refused MQTT %s; trying the next version", _name(version))
                if self._protocol_index != 0:
                    continue  # try the older version at once
            if outcome is Outcome.DROPPED:
                delay = 1.0
            elif outcome is Outcome.REFUSED:
                delay = self.reconnect_max_s
            wait = min(delay, self.reconnect_max_s) * random.uniform(0.5, 1.0)  # noqa: S311
            if self._stop.wait(wait):
                return
            delay = min(delay * 2, self.reconnect_max_s)

    def _make_client(self, version: MQTTProtocolVersion) -> mqtt.Client:
        v5 = version == MQTTProtocolVersion.MQTTv5
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.device_id,
            protocol=version,
            clean_session=None if v5 else False,
            reconnect_on_failure=False,
        )
        client.username_pw_set(self.username, self._password)
        if self.address.tls:
            context = ssl.create_default_context(cafile=self.tls_ca_path)
            client.tls_set_context(context)
        client.will_set(self.presence_topic, self._presence(False), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _session(self, version: MQTTProtocolVersion) -> Outcome:
        client = self._make_client(version)
        self._connack = None
        try:
            if version == MQTTProtocolVersion.MQTTv5:
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = SESSION_EXPIRY_S
                client.connect(
                    self.address.host,
                    self.address.port,
                    self.keepalive_s,
                    clean_start=False,
                    properties=props,
                )
            else:
                client.connect(self.address.host, self.address.port, self.keepalive_s)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.debug("broker %s unreachable: %s", self.address.host, exc)
            return Outcome.UNREACHABLE
        self._client = client
        deadline = time.monotonic() + self.connect_timeout_s
        was_up = False
        try:
            while not self._stop.is_set():
                rc = client.loop(timeout=0.5)
                if self.connected:
                    was_up = True
                connack = self._connack
                if connack is not None and connack.is_failure:
                    return self._refusal(connack)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
                if not was_up and time.monotonic() > deadline:
                    log.warning("no CONNACK from the broker within %.0f s", self.connect_timeout_s)
                    break
        finally:
            self._mark_down()
            if self._stop.is_set():
                client.loop(timeout=0.2)  # flush the offline presence and DISCONNECT
        if self._stop.is_set():
            return Outcome.STOPPED
        if was_up:
            return Outcome.DROPPED
        # TCP connected but no CONNACK: a 3.1.1-only broker that cannot parse v5.
        return Outcome.PROTOCOL if self._connack is None else Outcome.UNREACHABLE

    def _refusal(self, connack: ReasonCode) -> Outcome:
        if connack.value == _UNSUPPORTED_PROTOCOL:
            return Outcome.PROTOCOL
        if connack.value in _BAD_CREDENTIALS:
            log.error("the broker refused the device credential: %s", connack)
            return Outcome.REFUSED
        log.warning("the broker refused the connection: %s", connack)
        return Outcome.UNREACHABLE

    def _mark_down(self) -> None:
        if self._up.is_set():
            self._up.clear()
            self._down_since = time.monotonic()
            log.info("disconnected from the broker")

    # -- paho callbacks (supervisor thread) ---------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _u: Any, flags: Any, reason: ReasonCode, _p: Any
    ) -> None:
        self._connack = reason
        if reason.is_failure:
            return
        self.protocol = client.protocol
        client.subscribe(self.desired_topic, qos=1)
        client.publish(self.presence_topic, self._presence(True), qos=1, retain=True)
        self._reconcile_due.set()
        self._up.set()
        log.info(
            "connected to the broker with MQTT %s (session present: %s)",
            _name(client.protocol),
            bool(getattr(flags, "session_present", False)),
        )

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._mark_down()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.desired_topic and message.payload:
            self._inbox.put(bytes(message.payload))


def _name(version: MQTTProtocolVersion | int) -> str:
    return "5" if version == MQTTProtocolVersion.MQTTv5 else "3.1.1"


__all__ = ["SESSION_EXPIRY_S", "BrokerAddress", "MqttTransport", "Outcome"]
