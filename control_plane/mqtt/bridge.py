"""The control plane's MQTT connection: publish desired states, consume reports.

Theory of operation: one :class:`MqttBridge` per worker process, started in the
app's lifespan when ``mqtt.url`` is set. It runs three threads:

* paho's network loop (``loop_start``), which reconnects on its own;
* the *publisher*, the only thread that publishes: it takes device ids from an
  outbox queue, reads each device's newest desired state and publishes it
  retained at QoS 1. Broker acknowledgements come back through the same queue
  and are recorded (``published_at``); if the device got a newer assignment
  meanwhile, the newest is published again, so the retained message ends at
  the newest state even when workers race. Acknowledgements waiting in the
  queue together are recorded together (one transaction, one read of the
  devices' sequences), so a rollout's thousands of PUBACKs cost a few
  database writes, not one each. After every (re)connect it
  republishes every newest assignment the broker has not acknowledged yet, and every
  :data:`STALE_S` seconds it publishes those signed more than that long ago
  (a worker or replica that stored them may have died before publishing);
* the *ingester*, which drains a bounded queue of received messages (status,
  presence, telemetry and drift) in batches into
  :class:`~control_plane.devices.ingest.ReportIngest` and only
  then acknowledges them (manual acks), so a report is never lost between
  the broker and the database; a full queue makes paho stop reading, which
  pushes back to the broker.

Protocol: MQTT 5 when the broker offers it, else 3.1.1 (``mqtt.protocol``
``auto``; a refused or dropped MQTT 5 handshake downgrades). On MQTT 5 with a
``shared_group`` every worker consumes ``$share/<group>/…``; otherwise only
the worker holding slot 0 on this host subscribes (:mod:`._slots`). Sessions
are persistent under a client id fixed per host and slot, so reports sent
while the control plane restarts are queued by the broker.

Invariants: secrets are never logged; a malformed message never stops the
consumer (the ingester counts and drops it); the publisher never holds a lock
paho's network thread could wait for.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from control_plane.config import MqttSettings
from control_plane.devices.director import Director
from control_plane.devices.ingest import RawMessage, ReportIngest
from control_plane.mqtt._buffered import BufferedClient
from control_plane.mqtt._endpoint import Endpoint, client_id
from control_plane.mqtt._slots import Slot, claim_slot
from control_plane.store import Store
from fleetcore.protocol import Channel, subscription, topic

log = logging.getLogger("edgefleet.mqtt")
#: CONNACK reasons of a broker that does not speak MQTT 5 (5.0: 0x84; 3.1.1: 1).
_UNSUPPORTED_PROTOCOL = (0x84, 1)
_HANDSHAKES_BEFORE_DOWNGRADE = 2
_POLL_S = 0.5
#: An assignment still unacknowledged this long after it was signed is published again.
STALE_S = 10.0
#: Outbox items the publisher takes at once; acknowledgements among them are recorded together.
_PUBLISH_BATCH = 500

Item = tuple[str, str, int]  # (what, device id or refusal reason, mid)
Received = tuple[int, int, int, RawMessage]  # (connection, mid, qos, message)


class MqttBridge:
    def __init__(
        self,
        settings: MqttSettings,
        state_dir: Path,
        store: Store,
        director: Director,
        ingest: ReportIngest,
        clock: Callable[[], datetime],
    ) -> None:
        assert settings.url is not None and settings.password is not None
        self.settings = settings
        self.state_dir = state_dir
        self.store = store
        self.director = director
        self.ingest = ingest
        self.clock = clock
        self.endpoint = Endpoint.parse(settings.url)
        self.protocol = 3 if settings.protocol == "3.1.1" else 5
        self.connected = threading.Event()
        self.slot: Slot | None = None
        self._client: BufferedClient | None = None
        self._outbox: queue.Queue[Item] = queue.Queue()
        self._inbox: queue.Queue[Received] = queue.Queue(settings.ingest_queue_messages)
        self._pending: dict[int, tuple[str, int]] = {}
        self._connection = 0
        self._failed_handshakes = 0
        self._downgrade = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- public ------------------------------------------------------------------

    @property
    def consumer(self) -> bool:
        shared = self.protocol == 5 and bool(self.settings.shared_group)
        return shared or (self.slot is not None and self.slot.index == 0)

    def start(self) -> None:
        self.slot = claim_slot(self.state_dir)
        self._client = self._make_client()
        self._connect()
        for name, target in (("mqtt-publisher", self._publisher), ("mqtt-ingest", self._ingester)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info(
            "MQTT: connecting to %s:%d as %s (slot %d)",
            self.endpoint.host,
            self.endpoint.port,
            self.settings.username,
            self.slot.index,
        )

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        client = self._client
        if client is not None:
            client.disconnect()
            client.loop_stop()
        for thread in self._threads:
            thread.join(timeout_s)
        if self.slot is not None:
            self.slot.release()

    @property
    def queue_depth(self) -> int:
        """Received messages waiting to be stored (approximate)."""
        return self._inbox.qsize()

    def publish_latest(self, device_id: str) -> None:
        """Publish the device's newest desired state (soon, from the publisher thread)."""
        self._outbox.put(("latest", device_id, 0))

    def clear(self, device_id: str) -> None:
        """Delete the device's retained desired state and presence."""
        self._outbox.put(("clear", device_id, 0))

    # -- the paho client -------------------------------------------------------------

    def _make_client(self) -> BufferedClient:
        v5 = self.protocol == 5
        assert self.slot is not None and self.settings.password is not None
        client = BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id(self.slot.index),
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else False,
            manual_ack=True,
        )
        client.username_pw_set(self.settings.username, self.settings.password.get_secret_value())
        if self.endpoint.tls:
            ca = self.settings.tls_ca_file
            client.tls_set(ca_certs=None if ca is None else str(ca))
        client.reconnect_delay_set(1, self.settings.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def _connect(self) -> None:
        client = self._client
        assert client is not None
        keepalive = self.settings.keepalive_s
        if self.protocol == 5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.settings.session_expiry_s
            client.connect_async(
                self.endpoint.host,
                self.endpoint.port,
                keepalive,
                clean_start=False,
                properties=properties,
            )
        else:
            client.connect_async(self.endpoint.host, self.endpoint.port, keepalive)
        client.loop_start()

    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any
    ) -> None:
        if reason.is_failure:
            self._handshake_failed(f"refused: {reason}", reason.value in _UNSUPPORTED_PROTOCOL)
            return
        self._connection += 1
        self._failed_handshakes = 0
        self.connected.set()
        if self.consumer:
            group = self.settings.shared_group if self.protocol == 5 else ""
            channels = (Channel.STATUS, Channel.PRESENCE, Channel.TELEMETRY, Channel.DRIFT)
            client.subscribe([(subscription(c, shared_group=group or None), 1) for c in channels])
        log.info(
            "MQTT %s connected to %s:%d%s",
            "5" if self.protocol == 5 else "3.1.1",
            self.endpoint.host,
            self.endpoint.port,
            ", consuming reports" if self.consumer else "",
        )
        self._outbox.put(("republish", "", 0))

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if not self.connected.is_set():
            self._handshake_failed(f"closed before CONNACK ({reason})", True)
            return
        self.connected.clear()
        if not self._stopping.is_set():
            log.warning("MQTT connection lost (%s); reconnecting", reason)

    def _handshake_failed(self, why: str, maybe_protocol: bool) -> None:
        self._failed_handshakes += 1
        # Only a broker that never accepted MQTT 5 from us is taken for a 3.1.1 one.
        auto_v5 = self.protocol == 5 and self.settings.protocol == "auto" and not self._connection
        if auto_v5 and maybe_protocol and self._failed_handshakes >= _HANDSHAKES_BEFORE_DOWNGRADE:
            self._downgrade.set()
        log.warning("MQTT connection to %s:%d %s", self.endpoint.host, self.endpoint.port, why)

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        item = (
            self._connection,
            message.mid,
            message.qos,
            RawMessage(message.topic, bytes(message.payload), bool(message.retain)),
        )
        while not self._stopping.is_set():
            try:
                self._inbox.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue  # backpressure: paho stops reading until the ingester catches up

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        refused = str(reason) if reason.is_failure else ""
        self._outbox.put(("acked", refused, mid))

    # -- publisher thread -----------------------------------------------------------------

    def _publisher(self) -> None:
        swept = time.monotonic()
        while not self._stopping.is_set():
            if self._downgrade.is_set():
                self._switch_to_311()
            if time.monotonic() - swept > STALE_S and self.connected.is_set():
                swept = time.monotonic()
                self._outbox.put(("stale", "", 0))
            try:
                batch = [self._outbox.get(timeout=_POLL_S)]
            except queue.Empty:
                continue
            while len(batch) < _PUBLISH_BATCH:
                try:
                    batch.append(self._outbox.get_nowait())
                except queue.Empty:
                    break
            acks: list[Item] = []
            for item in batch:
                if item[0] == "acked":
                    acks.append(item)
                    continue
                self._acks(acks)  # in order: acknowledgements before what followed them
                acks = []
                what, device_id, _ = item
                try:
                    self._carry_out(what, device_id)
                except Exception:  # keep publishing for the other devices
                    log.exception("MQTT publisher: %s %s failed", what, device_id)
            self._acks(acks)

    def _acks(self, items: list[Item]) -> None:
        if not items:
            return
        try:
            self._acknowledged([(self._pending.pop(n, None), refused) for _, refused, n in items])
        except Exception:  # unrecorded: published_at stays empty, the next republish repeats it
            log.exception("MQTT publisher: recording %d acknowledgements failed", len(items))

    def _switch_to_311(self) -> None:
        self._downgrade.clear()
        log.warning("the broker does not speak MQTT 5; using MQTT 3.1.1")
        old = self._client
        if old is not None:
            old.disconnect()
            old.loop_stop()
        self.protocol = 3
        self._failed_handshakes = 0
        self._pending.clear()
        self._client = self._make_client()
        self._connect()

    def _carry_out(self, what: str, device_id: str) -> None:
        client = self._client
        assert client is not None
        if what == "latest":
            desired = self.director.desired(device_id)
            if desired is not None:
                sequence, document = desired
                info = client.publish(
                    topic(device_id, Channel.DESIRED), document, qos=1, retain=True
                )
                self._pending[info.mid] = (device_id, sequence)
        elif what == "clear":
            for channel in (Channel.DESIRED, Channel.PRESENCE):
                client.publish(topic(device_id, channel), b"", qos=1, retain=True)
        elif what == "republish":
            for assignment in self.store.unpublished_assignments():
                self._carry_out("latest", assignment.device_id)
        elif what == "stale":
            # Stored by a worker or replica that died before publishing them: nobody
            # else would, until a reconnect. Fresh ones are still on their way.
            before = self.clock() - timedelta(seconds=STALE_S)
            for assignment in self.store.unpublished_assignments():
                if assignment.issued_at < before:
                    self._carry_out("latest", assignment.device_id)

    def _acknowledged(self, acks: list[tuple[tuple[str, int] | None, str]]) -> None:
        """Record broker acknowledgements: ((device, sequence) or None, refusal) each."""
        done: list[tuple[str, int]] = []
        for published, refused in acks:
            if published is None:
                continue  # a clear, or a message of a client replaced meanwhile
            if refused:  # an MQTT 5 broker said no: the next republish tries again
                log.error(
                    "MQTT: the broker refused the desired state of %s: %s", published[0], refused
                )
                continue
            done.append(published)
        if not done:
            return
        now = self.clock()
        with self.store.transaction() as tx:
            for device_id, sequence in done:
                tx.mark_assignment_published(device_id, sequence, now)
        current = self.store.desired_sequences([device_id for device_id, _ in done])
        for device_id, sequence in done:
            if current.get(device_id, 0) != sequence:
                self.publish_latest(device_id)  # a newer one may have been overwritten by this

    # -- ingester thread ---------------------------------------------------------------------

    def _ingester(self) -> None:
        size = self.settings.ingest_batch_messages
        while not self._stopping.is_set():
            try:
                batch = [self._inbox.get(timeout=_POLL_S)]
            except queue.Empty:
                continue
            while len(batch) < size:
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            if self._store(batch):
                self._ack(batch)

    def _store(self, batch: list[Received]) -> bool:
        while not self._stopping.is_set():
            try:
                self.ingest.mqtt([message for *_, message in batch])
                return True
            except Exception:  # the database failed: keep the batch, try again
                log.exception("storing %d MQTT messages failed; retrying", len(batch))
                self._stopping.wait(1.0)
        return False  # unacknowledged: the broker delivers them again

    def _ack(self, batch: list[Received]) -> None:
        client = self._client
        if client is None:
            return
        # A message from an earlier connection is delivered again on this one
        # (same packet id); acknowledging it here could ack another message.
        current = self._connection
        client.ack_many(
            mid for connection, mid, qos, _ in batch if qos == 1 and connection == current
        )
        for connection, mid, qos, _ in batch:
            if qos > 1 and connection == current:
                client.ack(mid, qos)


__all__ = ["Endpoint", "MqttBridge", "client_id"]
