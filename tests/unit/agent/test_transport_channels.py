"""Drift, telemetry and capture payloads: HTTP routes against a real server, the link's draining."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent._channel_outbox import ChannelOutbox
from agent.api import ControlPlane
from agent.errors import ServerError, TransportError
from agent.link import Link
from agent.outbox import Outbox
from agent.statedb import StateDB
from agent.transport import AutoTransport
from agent.transport.http import HttpTransport
from fleetcore.protocol import Channel
from tests.unit.agent.driftkit import channels
from tests.unit.agent.fakecp import FakeControlPlane

DEVICE = "dev-1"


@pytest.fixture
def http(fakecp: FakeControlPlane) -> Iterator[HttpTransport]:
    api = ControlPlane(fakecp.url, DEVICE, fakecp.state.device_token)
    yield HttpTransport(api, wait_s=0)
    api.close()


def test_http_posts_each_summary_as_octets(http: HttpTransport, fakecp: FakeControlPlane) -> None:
    assert http.publish(Channel.DRIFT, [b"EFDS-one", b"EFDS-two"]) == 2
    assert fakecp.state.channels["drift"] == [b"EFDS-one", b"EFDS-two"]
    assert http.connected


def test_http_posts_telemetry_in_batches(http: HttpTransport, fakecp: FakeControlPlane) -> None:
    reports = [json.dumps({"seq": i}).encode() for i in range(1, 4)]
    assert http.publish(Channel.TELEMETRY, reports) == 3
    assert [r["seq"] for r in fakecp.state.channels["telemetry"]] == [1, 2, 3]


def test_http_uploads_a_capture_with_its_query(
    http: HttpTransport, fakecp: FakeControlPlane
) -> None:
    http.upload_capture(b"npz", {"model": "tiny", "release": "2", "window_start": "60"})
    assert fakecp.state.channels["captures"] == [
        ({"model": "tiny", "release": "2", "window_start": "60"}, b"npz")
    ]


def test_http_refusals_and_outages_are_our_errors(
    http: HttpTransport, fakecp: FakeControlPlane
) -> None:
    fakecp.state.channel_status = 422
    with pytest.raises(ServerError):
        http.publish(Channel.DRIFT, [b"bad"])
    fakecp.state.channel_status = 503
    with pytest.raises(TransportError):
        http.publish(Channel.TELEMETRY, [b"{}"])
    assert not http.connected
    with pytest.raises(ValueError):
        http.publish(Channel.STATUS, [b"{}"])


@dataclass
class Recorder:
    """A transport that records published payloads; ``refuse`` payloads raise ServerError."""

    name: str = "fake"
    up: bool = True
    published: list[tuple[str, bytes]] = field(default_factory=list)
    refuse: set[bytes] = field(default_factory=set)
    uploads: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)

    @property
    def connected(self) -> bool:
        return self.up

    @property
    def current(self) -> str:
        return self.name

    def down_for_s(self) -> float:
        return 0.0 if self.up else 1e9

    def start(self) -> None:
        return None

    def close(self) -> None:
        return None

    def receive(self, timeout_s: float) -> bytes | None:
        threading.Event().wait(min(timeout_s, 0.05))
        return None

    def send(self, reports: Sequence[bytes]) -> int:
        return len(reports)

    def publish(self, channel: Channel, payloads: Sequence[bytes]) -> int:
        if not self.up:
            raise TransportError("down")
        for body in payloads:
            if body in self.refuse:
                raise ServerError("refused", status=422)
        self.published += [(channel.value, body) for body in payloads]
        return len(payloads)

    def upload(self, body: bytes, meta: dict[str, str]) -> None:
        self.uploads.append((body, dict(meta)))


def link_with(tmp_path: Path, transport: Recorder) -> tuple[Link, ChannelOutbox]:
    queue = channels(tmp_path)
    outbox = Outbox(StateDB.open(tmp_path))
    link = Link(transport, outbox, lambda d: None, channels=queue, upload_capture=transport.upload)
    return link, queue


def test_the_link_drains_every_channel_in_order(tmp_path: Path) -> None:
    transport = Recorder()
    link, queue = link_with(tmp_path, transport)
    for i in range(3):
        queue.enqueue("drift", lambda seq, i=i: b"d%d" % i)
    queue.enqueue("telemetry", lambda seq: b"t")
    queue.enqueue("capture", lambda seq: b"npz", {"model": "tiny"})
    assert link.flush_channels()
    assert transport.published == [
        ("telemetry", b"t"),
        ("drift", b"d0"),
        ("drift", b"d1"),
        ("drift", b"d2"),
    ]
    assert transport.uploads == [(b"npz", {"model": "tiny"})]
    assert queue.depth() == 0
    assert not link.flush_channels()


def test_a_refused_payload_is_dropped_not_blocking_the_rest(tmp_path: Path) -> None:
    transport = Recorder(refuse={b"d1"})
    link, queue = link_with(tmp_path, transport)
    for i in range(3):
        queue.enqueue("drift", lambda seq, i=i: b"d%d" % i)
    link.flush_channels()
    assert [b for _, b in transport.published] == [b"d0", b"d2"]
    assert queue.depth() == 0


def test_an_outage_keeps_the_payloads(tmp_path: Path) -> None:
    transport = Recorder(up=False)
    link, queue = link_with(tmp_path, transport)
    queue.enqueue("drift", lambda seq: b"d")
    with pytest.raises(TransportError):
        link.flush_channels()
    assert queue.depth() == 1
    transport.up = True
    assert link.flush_channels() and queue.depth() == 0


def test_the_sender_thread_wakes_on_a_new_payload(tmp_path: Path) -> None:
    transport = Recorder()
    link, queue = link_with(tmp_path, transport)
    link.start()
    try:
        queue.enqueue("drift", lambda seq: b"d")
        deadline = threading.Event()
        for _ in range(100):
            if transport.published:
                break
            deadline.wait(0.05)
        assert transport.published == [("drift", b"d")]
    finally:
        link.stop()


def test_auto_routes_published_payloads_like_reports() -> None:
    mqtt, http = Recorder(name="mqtt", up=False), Recorder(name="http")
    auto = AutoTransport(mqtt, http, fallback_after_s=30)
    assert auto.publish(Channel.DRIFT, [b"x"]) == 1
    assert http.published == [("drift", b"x")] and not mqtt.published
