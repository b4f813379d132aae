"""The buffered paho client: large reads served in paho's small pieces, one socket at a time."""

from __future__ import annotations

import socket

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from control_plane.mqtt._buffered import BufferedClient


def _client() -> BufferedClient:
    return BufferedClient(CallbackAPIVersion.VERSION2, client_id="buffered-test")


def test_paho_still_has_the_methods_it_overrides() -> None:
    for name in ("_sock_recv", "loop_read", "_packet_read"):
        assert callable(getattr(mqtt.Client, name)), name


def test_small_reads_are_served_from_one_large_read() -> None:
    client = _client()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours
    theirs.sendall(b"abcdefgh")
    assert client._sock_recv(1) == b"a"
    theirs.sendall(b"XYZ")  # still in the kernel: the buffer is served first
    assert client._sock_recv(3) == b"bcd"
    assert client._sock_recv(10) == b"efgh"
    assert client._sock_recv(10) == b"XYZ"
    with pytest.raises(BlockingIOError):
        client._sock_recv(1)
    theirs.close()
    assert client._sock_recv(1) == b""  # closed: paho sees the end as before
    ours.close()


def test_bytes_of_an_old_connection_are_never_read_on_a_new_one() -> None:
    client = _client()
    old, old_peer = socket.socketpair()
    client._sock = old
    old_peer.sendall(b"stale bytes")
    assert client._sock_recv(1) == b"s"
    new, new_peer = socket.socketpair()
    new.setblocking(False)
    client._sock = new
    new_peer.sendall(b"fresh")
    assert client._sock_recv(5) == b"fresh"
    for s in (old, old_peer, new, new_peer):
        s.close()


def test_loop_read_handles_every_buffered_packet() -> None:
    client = _client()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours
    handled: list[int] = []

    def handle() -> MQTTErrorCode:
        handled.append(client._in_packet["command"])
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    client._packet_handle = handle  # type: ignore[method-assign]
    theirs.sendall(bytes([0xD0, 0x00]) * 50)  # 50 PINGRESP packets in one read
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert handled == [0xD0] * 50
    ours.close()
    theirs.close()
