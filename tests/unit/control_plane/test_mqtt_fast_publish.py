"""BufferedClient's PUBLISH fast path and batched acks: the same as paho's own, byte for byte.

Each packet is handed to the fast path and to paho's ``_handle_publish``
(the fast path's fallback); the messages the callback sees must match field
for field, and packets outside the fast path (QoS 0 and 2, properties, bad
UTF-8, empty or truncated topics) must reach paho's own handling.
"""

from __future__ import annotations

import struct
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from control_plane.mqtt._buffered import BufferedClient

TOPIC = b"edgefleet/v1/devices/dev-0001/telemetry"


def _client(protocol: MQTTProtocolVersion, seen: list[Any]) -> BufferedClient:
    client = BufferedClient(
        CallbackAPIVersion.VERSION2, client_id="t", protocol=protocol, manual_ack=True
    )
    client.on_message = lambda _c, _u, m: seen.append(
        (m.topic, bytes(m.payload), m.mid, m.qos, m.retain, m.dup)
    )
    return client


def _packet(topic: bytes, mid: int, payload: bytes, v5: bool, properties: bytes = b"\x00") -> bytes:
    return (
        struct.pack("!H", len(topic))
        + topic
        + struct.pack("!H", mid)
        + (properties if v5 else b"")
        + payload
    )


def _handle(client: BufferedClient, command: int, packet: bytes, fast: bool) -> None:
    client._in_packet = {"command": command, "packet": packet}  # type: ignore[typeddict-item]
    if fast:
        client._handle_publish()
    else:
        mqtt.Client._handle_publish(client)


@pytest.mark.parametrize("protocol", [MQTTProtocolVersion.MQTTv311, MQTTProtocolVersion.MQTTv5])
@pytest.mark.parametrize(
    ("command", "topic", "mid", "payload", "properties"),
    [
        (0x32, TOPIC, 7, b'{"a":1}', b"\x00"),
        (0x33, TOPIC, 65535, b"", b"\x00"),  # retained, empty payload
        (0x3A, TOPIC, 1, b"x" * 300, b"\x00"),  # duplicate delivery
        (0x32, TOPIC, 256, bytes(range(256)), b"\x02\x01\x01"),  # with a property
        (0x32, "dévice/é".encode(), 9, b"p", b"\x00"),
    ],
)
def test_the_callback_sees_what_paho_would_show(
    protocol: MQTTProtocolVersion,
    command: int,
    topic: bytes,
    mid: int,
    payload: bytes,
    properties: bytes,
) -> None:
    v5 = protocol == MQTTProtocolVersion.MQTTv5
    fast: list[Any] = []
    slow: list[Any] = []
    packet = _packet(topic, mid, payload, v5, properties)
    _handle(_client(protocol, fast), command, packet, fast=True)
    _handle(_client(protocol, slow), command, packet, fast=False)
    assert fast == slow and len(fast) == 1


def test_other_packets_take_paho_s_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = mqtt.Client._handle_publish

    def counted(self: mqtt.Client) -> Any:
        calls.append(1)
        return original(self)

    monkeypatch.setattr(mqtt.Client, "_handle_publish", counted)
    seen: list[Any] = []
    client = _client(MQTTProtocolVersion.MQTTv5, seen)
    client.on_message = lambda _c, _u, m: seen.append(m.mid)  # paho's topic would raise
    for command, packet in [
        (0x30, struct.pack("!H", len(TOPIC)) + TOPIC + b"\x00q0"),  # QoS 0
        (0x32, _packet(TOPIC, 3, b"x", True, b"\x02\x01\x01")),  # properties
        (0x32, _packet(b"\xff\xfe", 3, b"x", True)),  # topic not UTF-8
    ]:
        _handle(client, command, packet, fast=True)
    assert len(calls) == 3 and seen == [0, 3, 3]
    client.message_callback_add("edgefleet/#", lambda *_: None)
    _handle(client, 0x32, _packet(TOPIC, 4, b"x", True), fast=True)
    assert len(calls) == 4


@pytest.mark.parametrize("protocol", [MQTTProtocolVersion.MQTTv311, MQTTProtocolVersion.MQTTv5])
def test_many_acks_are_the_bytes_of_single_acks(protocol: MQTTProtocolVersion) -> None:
    mids = [1, 2, 255, 256, 65535]
    single = BufferedClient(CallbackAPIVersion.VERSION2, protocol=protocol, manual_ack=True)
    for mid in mids:
        single.ack(mid, 1)
    many = BufferedClient(CallbackAPIVersion.VERSION2, protocol=protocol, manual_ack=True)
    many.ack_many(mids)
    many.ack_many([])
    assert len(many._out_packet) == 1
    assert many._out_packet[0]["packet"] == b"".join(p["packet"] for p in single._out_packet)
    auto = BufferedClient(CallbackAPIVersion.VERSION2, protocol=protocol)
    auto.ack_many(mids)  # without manual acks paho has acknowledged already
    assert not auto._out_packet
