"""The MQTT transport against a real Mosquitto: session, retained state, QoS 1, presence."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from agent.errors import TransportError
from agent.transport.mqtt import MqttTransport
from fleetcore.protocol import Channel, Presence, StatusReport, topic
from tests.unit.agent.mqtt_proxy import MqttProxy
from tests.unit.agent.test_outbox import report

DEVICE = "dev-001"
PASSWORD = "device-secret"
CP_PASSWORD = "cp-secret"

# Locally a missing broker skips; with CI=true the tests run and fail on it.
pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto") is None
    and not Path("/usr/sbin/mosquitto").exists()
    and os.environ.get("CI", "").lower() not in {"1", "true", "yes"},
    reason="needs the mosquitto broker",
)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[object]:
    from tests.support.mosquitto import running_broker

    users = {DEVICE: PASSWORD, "control-plane": CP_PASSWORD}
    with running_broker(tmp_path / "broker", users) as running:
        yield running


@pytest.fixture
def cp_probe(broker: object) -> Iterator[object]:
    probe = broker.probe("control-plane", CP_PASSWORD)  # type: ignore[attr-defined]
    assert probe.connect() == "Success"
    yield probe
    probe.close()


def wait_until(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def make(url: str, reconciled: list[int] | None = None, password: str = PASSWORD) -> MqttTransport:
    counter = reconciled if reconciled is not None else []

    def reconcile() -> bytes | None:
        counter.append(1)
        return None

    return MqttTransport(
        device_id=DEVICE,
        url=url,
        username=DEVICE,
        password=password,
        keepalive_s=5,
        connect_timeout_s=3,
        reconnect_max_s=1,
        reconcile=reconcile,
    )


def presence(probe: object) -> list[bool]:
    seen = []
    while (message := probe.next_message(0.5)) is not None:  # type: ignore[attr-defined]
        if message.topic.endswith("/presence"):
            seen.append(Presence.decode(message.payload).online)
    return seen


def test_connects_receives_retained_desired_and_confirms_reports(broker, cp_probe) -> None:  # type: ignore[no-untyped-def]
    desired = topic(DEVICE, Channel.DESIRED)
    cp_probe.publish(desired, b'{"retained": 1}', retain=True)
    cp_probe.subscribe(topic(DEVICE, Channel.STATUS))
    cp_probe.subscribe(topic(DEVICE, Channel.PRESENCE))
    reconciled: list[int] = []
    transport = make(broker.url, reconciled)
    transport.start()
    try:
        wait_until(lambda: transport.connected)
        assert transport.protocol == MQTTProtocolVersion.MQTTv5
        assert transport.current == "mqtt"
        assert transport.receive(5) == b'{"retained": 1}'  # reconcile found nothing new
        assert reconciled == [1]
        body = report().encode()
        assert transport.send([body, body]) == 2
        statuses = []
        while (message := cp_probe.next_message(1)) is not None:
            if message.topic.endswith("/status"):
                statuses.append(StatusReport.decode(message.payload))
            elif message.topic.endswith("/presence"):
                assert Presence.decode(message.payload).online
        assert len(statuses) == 2
    finally:
        transport.close()
    assert presence(cp_probe) == [False]  # said goodbye on a clean close


def test_last_will_on_a_lost_connection_then_reconnect(broker, cp_probe) -> None:  # type: ignore[no-untyped-def]
    proxy = MqttProxy(broker.port)
    cp_probe.subscribe(topic(DEVICE, Channel.PRESENCE))
    reconciled: list[int] = []
    transport = make(proxy.url, reconciled)
    transport.start()
    try:
        wait_until(lambda: transport.connected)
        transport.receive(0.1)  # the receiver thread's call performs the reconciliation
        assert reconciled == [1]
        assert presence(cp_probe)[-1] is True
        proxy.block()  # the network goes away
        wait_until(lambda: not transport.connected)
        with pytest.raises(TransportError):
            transport.send([report().encode()])
        seen: list[bool] = []

        def offline_seen() -> bool:
            seen.extend(presence(cp_probe))
            return False in seen

        wait_until(offline_seen, timeout_s=20)
        assert transport.down_for_s() > 0
        proxy.unblock()
        wait_until(lambda: transport.connected, timeout_s=20)
        transport.receive(0.1)
        assert len(reconciled) == 2  # once per (re)connect
    finally:
        transport.close()
        proxy.close()


def test_persistent_session_delivers_what_was_published_while_offline(broker, cp_probe) -> None:  # type: ignore[no-untyped-def]
    proxy = MqttProxy(broker.port)
    transport = make(proxy.url)
    transport.start()
    try:
        wait_until(lambda: transport.connected)
        time.sleep(0.2)  # the SUBACK
        proxy.block()
        wait_until(lambda: not transport.connected)
        cp_probe.publish(topic(DEVICE, Channel.DESIRED), b'{"while": "offline"}', retain=False)
        proxy.unblock()
        wait_until(lambda: transport.connected, timeout_s=20)
        assert transport.receive(5) == b'{"while": "offline"}'
    finally:
        transport.close()
        proxy.close()


@pytest.mark.parametrize("mode", ["refuse_v5", "drop_v5"])
def test_falls_back_to_mqtt_311_when_the_broker_refuses_v5(broker, cp_probe, mode: str) -> None:  # type: ignore[no-untyped-def]
    proxy = MqttProxy(broker.port, mode=mode)
    cp_probe.publish(topic(DEVICE, Channel.DESIRED), b'{"for": "311"}', retain=True)
    cp_probe.subscribe(topic(DEVICE, Channel.STATUS))
    transport = make(proxy.url)
    transport.start()
    try:
        wait_until(lambda: transport.connected)
        assert transport.protocol == MQTTProtocolVersion.MQTTv311
        assert proxy.levels[:2] == [5, 4]
        assert transport.receive(5) == b'{"for": "311"}'
        assert transport.send([report().encode()]) == 1
    finally:
        transport.close()
        proxy.close()


def test_wrong_password_never_connects(broker) -> None:  # type: ignore[no-untyped-def]
    transport = make(broker.url, password="wrong")
    transport.start()
    try:
        time.sleep(1.5)
        assert not transport.connected
        assert transport.current == "none"
    finally:
        transport.close()
