"""Transports: the auto fallback table (fakes), HTTP against a real server, the link."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.api import ControlPlane
from agent.errors import AuthError, TransportError
from agent.link import Link
from agent.outbox import Outbox
from agent.statedb import StateDB
from agent.transport import AutoTransport
from agent.transport.http import HttpTransport
from tests.unit.agent.fakecp import FakeControlPlane
from tests.unit.agent.test_outbox import report


@dataclass
class FakeLink:
    """A transport double: scripted documents, confirms a configurable number of reports."""

    name: str
    up: bool = True
    down_since: float = 0.0
    documents: list[bytes] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)
    confirm: int | None = None
    clock: list[float] = field(default_factory=lambda: [0.0])

    @property
    def connected(self) -> bool:
        return self.up

    @property
    def current(self) -> str:
        return self.name if self.up else "none"

    def down_for_s(self) -> float:
        return 0.0 if self.up else self.clock[0] - self.down_since

    def start(self) -> None:
        return None

    def close(self) -> None:
        return None

    def receive(self, timeout_s: float) -> bytes | None:
        if not self.up:
            raise TransportError(f"{self.name} down")
        return self.documents.pop(0) if self.documents else None

    def send(self, reports: Sequence[bytes]) -> int:
        if not self.up:
            raise TransportError(f"{self.name} down")
        count = len(reports) if self.confirm is None else min(self.confirm, len(reports))
        self.sent.extend(reports[:count])
        return count


def auto(fallback_after_s: float = 30.0) -> tuple[AutoTransport, FakeLink, FakeLink]:
    clock = [100.0]
    mqtt = FakeLink("mqtt", clock=clock)
    http = FakeLink("http", clock=clock)
    return AutoTransport(mqtt, http, fallback_after_s=fallback_after_s), mqtt, http


def test_auto_uses_mqtt_while_connected() -> None:
    transport, mqtt, http = auto()
    mqtt.documents.append(b"from-mqtt")
    http.documents.append(b"from-http")
    assert transport.current == "mqtt"
    assert transport.receive(1) == b"from-mqtt"
    assert transport.send([b"r"]) == 1
    assert mqtt.sent == [b"r"] and http.sent == []


def test_auto_waits_for_the_broker_during_the_grace_period() -> None:
    transport, mqtt, http = auto(fallback_after_s=30)
    mqtt.up, mqtt.down_since = False, 90.0  # down for 10 s
    assert transport.current == "none"
    with pytest.raises(TransportError, match="waiting for the broker"):
        transport.send([b"r"])
    with pytest.raises(TransportError):
        transport.receive(1)  # the MQTT side is asked, and it is down
    assert http.sent == []


def test_auto_falls_back_to_http_and_returns_to_mqtt() -> None:
    transport, mqtt, http = auto(fallback_after_s=30)
    mqtt.up, mqtt.down_since = False, 60.0  # down for 40 s
    http.documents.append(b"from-http")
    assert transport.current == "http"
    assert transport.receive(1) == b"from-http"
    assert transport.send([b"r1"]) == 1
    assert http.sent == [b"r1"]
    mqtt.up = True  # the broker is back
    assert transport.current == "mqtt"
    assert transport.send([b"r2"]) == 1
    assert mqtt.sent == [b"r2"]


# -- HTTP against a real server ----------------------------------------------------------------


@pytest.fixture
def api(fakecp: FakeControlPlane) -> ControlPlane:
    return ControlPlane(fakecp.url, "dev-001", fakecp.state.device_token, timeout_s=5)


def test_http_receive_uses_etag_and_long_polls(fakecp: FakeControlPlane, api: ControlPlane) -> None:
    transport = HttpTransport(api, wait_s=1)
    assert transport.receive(5) is None  # 204: no assignment yet
    fakecp.set_desired(b'{"doc": 1}', '"1"')
    assert transport.receive(5) == b'{"doc": 1}'
    assert transport.etag == '"1"'
    started = time.monotonic()
    assert transport.receive(5) is None  # 304 after holding the request
    assert time.monotonic() - started >= 0.9
    threading.Timer(0.1, fakecp.set_desired, (b'{"doc": 2}', '"2"')).start()
    assert transport.receive(5) == b'{"doc": 2}'  # answered as soon as it changed
    assert transport.connected


def test_http_send_posts_batches(fakecp: FakeControlPlane, api: ControlPlane) -> None:
    transport = HttpTransport(api, wait_s=0)
    bodies = [report().encode() for _ in range(3)]
    assert transport.send(bodies) == 3
    assert len(fakecp.state.reports) == 3


def test_http_errors_are_converted(fakecp: FakeControlPlane) -> None:
    bad = HttpTransport(ControlPlane(fakecp.url, "dev-001", "efd_wrong"), wait_s=0)
    with pytest.raises(AuthError):
        bad.receive(1)
    fakecp.state.report_status = 503
    good = HttpTransport(ControlPlane(fakecp.url, "dev-001", fakecp.state.device_token), wait_s=0)
    with pytest.raises(TransportError):
        good.send([report().encode()])
    assert not good.connected
    gone = HttpTransport(ControlPlane("http://127.0.0.1:9", "dev-001", "x"), wait_s=0)
    with pytest.raises(TransportError):
        gone.receive(1)


# -- the link ----------------------------------------------------------------------------------


def test_link_acks_only_confirmed_reports_in_order(tmp_path: Path) -> None:
    outbox = Outbox(StateDB.open(tmp_path))
    for _ in range(5):
        outbox.enqueue(report())
    transport = FakeLink("http", confirm=2)
    link = Link(transport, outbox, lambda d: None)
    with pytest.raises(TransportError, match="not confirmed"):
        link.flush()
    assert [i.seq for i in outbox.peek()] == [3, 4, 5]
    transport.confirm = None
    assert link.flush()
    assert outbox.stats().depth == 0
    from fleetcore.protocol import StatusReport

    assert [StatusReport.decode(b).seq for b in transport.sent] == [1, 2, 3, 4, 5]


def test_link_threads_deliver_documents_and_reports(tmp_path: Path) -> None:
    outbox = Outbox(StateDB.open(tmp_path))
    transport = FakeLink("http", documents=[b"d1", b"d2"])
    received: list[bytes] = []
    link = Link(transport, outbox, received.append, receive_timeout_s=0.01)
    link.start()
    try:
        outbox.enqueue(report())
        deadline = time.monotonic() + 5
        while (outbox.stats().depth or len(received) < 2) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        link.stop()
    assert received == [b"d1", b"d2"]
    assert outbox.stats().depth == 0
    assert len(transport.sent) == 1


def test_link_sends_the_newest_confirmed_report_again_once_it_is_old(tmp_path: Path) -> None:
    from fleetcore.protocol import StatusReport

    outbox = Outbox(StateDB.open(tmp_path))
    transport = FakeLink("http")
    link = Link(transport, outbox, lambda d: None, resend_s=0.05)
    assert not link.resend_due()  # nothing confirmed yet
    outbox.enqueue(report())
    outbox.enqueue(report())
    assert link.flush()
    assert not link.resend_due()  # too young
    time.sleep(0.06)
    outbox.enqueue(report())  # a newer report is queued: it goes first, not a resend
    assert not link.resend_due()
    assert link.flush()
    time.sleep(0.06)
    assert link.resend_due()
    assert [StatusReport.decode(b).seq for b in transport.sent] == [1, 2, 3, 3]
    assert not link.resend_due()  # the clock restarted with the resend
    off = Link(transport, outbox, lambda d: None, resend_s=0)
    off._last = (0.0, transport.sent[-1])
    assert not off.resend_due()
