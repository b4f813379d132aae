"""A paho client that reads the socket in large chunks (the report consumer's hot path).

Theory of operation: paho 2.x reads every incoming packet with at least three
``recv`` calls (the command byte, the length bytes one at a time, then the
rest) and a ``select`` before each packet. Draining a backlog of small QoS 1
reports, those system calls cost more than the packets' parsing. This client
overrides paho's single read primitive, ``Client._sock_recv``, to read up to
:data:`CHUNK_BYTES` at once and serve paho's small reads from that buffer,
and ``loop_read`` to keep handling packets while the buffer holds bytes
(``select`` cannot see them). Acknowledgements go out in batches too:
:meth:`BufferedClient.ack_many` queues the PUBACKs of a stored batch as one
write, where paho's ``ack`` costs a wake-up of its network thread and a
``send`` per message. And the consumer's one kind of PUBLISH (QoS 1, no
properties, a UTF-8 topic, manual acks, one ``on_message``, no logging) is
decoded by :meth:`BufferedClient._handle_publish` in a few slices, where
paho builds and parses an MQTT 5 property set and matches per-topic callbacks
for each message; every other PUBLISH is paho's own. Everything else (packet
parsing, keepalive, TLS, reconnects) is paho's own.

Invariants: the buffer belongs to one socket; bytes left from a previous
connection are discarded, never parsed as the new connection's. A read that
would block, or a closed connection, reaches paho exactly as before (empty
buffer: the real ``recv`` runs). ``tests/unit/control_plane/test_mqtt_buffered.py``
pins the private methods this relies on.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

#: Bytes asked of the socket per read.
CHUNK_BYTES = 256 * 1024
#: A PUBACK without reason code or properties (success, on MQTT 3.1.1 and 5):
#: fixed header 0x40, remaining length 2, packet id, as paho's own ``ack`` writes it.
_PUBACK = struct.Struct("!BBH")


class BufferedClient(mqtt.Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._buffer = b""
        self._position = 0
        self._buffered_socket: object = None
        self._filtered = False

    def _buffered(self) -> int:
        if self._buffered_socket is not self._sock:  # a new connection: drop the old bytes
            self._buffer, self._position, self._buffered_socket = b"", 0, self._sock
        return len(self._buffer) - self._position

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self._buffered():
            data = super()._sock_recv(max(bufsize, CHUNK_BYTES))
            if len(data) <= bufsize:
                return data  # also b"": the connection closed
            self._buffer, self._position = data, 0
        start = self._position
        chunk = self._buffer[start : start + bufsize]
        self._position = start + len(chunk)
        return chunk

    def message_callback_add(self, sub: str, callback: Any) -> None:
        self._filtered = True  # per-topic callbacks: paho's matching from now on
        super().message_callback_add(sub, callback)

    def _handle_publish(self) -> MQTTErrorCode:
        command, packet = self._in_packet["command"], self._in_packet["packet"]
        on_message = self.on_message
        plain = (command & 0x06) == 0x02 and self._manual_ack and not self._filtered
        if on_message is None or not plain or self._logger is not None or self.on_log is not None:
            return super()._handle_publish()
        size = len(packet)
        if size < 2:
            return super()._handle_publish()
        end = 2 + ((packet[0] << 8) | packet[1])  # topic length, then topic
        start = end + (3 if self._protocol == mqtt.MQTTv5 else 2)  # packet id (+ properties)
        if end == 2 or start > size or (start == end + 3 and packet[end + 2] != 0):
            return super()._handle_publish()  # empty topic, truncated, or properties
        topic = bytes(packet[2:end])
        try:
            topic.decode("utf-8")
        except UnicodeDecodeError:
            return super()._handle_publish()
        message = mqtt.MQTTMessage(mid=(packet[end] << 8) | packet[end + 1], topic=topic)
        message.dup = bool(command & 0x08)
        message.qos = 1
        message.retain = bool(command & 0x01)
        message.payload = packet[start:]
        message.timestamp = mqtt.time_func()
        with self._in_callback_mutex:
            try:
                on_message(self, self._userdata, message)
            except Exception:
                if not self.suppress_exceptions:
                    raise
        return MQTTErrorCode.MQTT_ERR_SUCCESS  # acknowledged by the caller (manual acks)

    def ack_many(self, mids: Iterable[int]) -> None:
        """Acknowledge QoS 1 messages (manual acks), every PUBACK in one queued write."""
        packet = b"".join([_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid in mids])
        if packet and self._manual_ack:
            # One entry of paho's outgoing queue: written in order with the rest,
            # with paho's own partial-write handling; a PUBACK needs no completion.
            self._packet_queue(mqtt.PUBACK, packet, 0, 1)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None and self._buffered():
            rc = super().loop_read(max_packets)
        return rc


__all__ = ["CHUNK_BYTES", "BufferedClient"]
