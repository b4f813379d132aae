"""The MQTT bridge against a real Mosquitto: who consumes, publishing, acknowledgements.

Two bridges on one state directory stand for two uvicorn workers on one host.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from control_plane.mqtt.bridge import MqttBridge, client_id
from control_plane.services import DeviceServices
from fleetcore.protocol import Channel, StatusReport, UpdateState, topic
from tests.support.mosquitto import Broker, running_broker
from tests.unit.control_plane.fleet_support import Fleet, make_fleet

T = TypeVar("T")


def eventually(check: Callable[[], T], what: str, timeout_s: float = 10.0) -> T:
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[Broker, str]]:
    password = secrets.token_urlsafe(16)
    with running_broker(tmp_path / "broker", {"control-plane": password}) as started:
        yield started, password


def fleet_on(broker: Broker, password: str, tmp_path: Path, protocol: str) -> Fleet:
    return make_fleet(
        tmp_path / "cp",
        mqtt={
            "url": broker.url,
            "password": password,
            "password_file": str(broker.password_file),
            "broker_pid_file": str(broker.pid_file),
            "protocol": protocol,
        },
    )


def second_worker(fleet: Fleet) -> MqttBridge:
    devices: DeviceServices = fleet.devices
    settings = fleet.services.settings
    return MqttBridge(
        settings.mqtt,
        settings.data_dir / "mqtt",
        fleet.services.store,
        devices.director,
        devices.ingest,
        fleet.clock,
    )


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_one_consumer_per_host_on_311_and_all_workers_on_mqtt5(
    broker: tuple[Broker, str], tmp_path: Path, protocol: str
) -> None:
    mosquitto, password = broker
    fleet = fleet_on(mosquitto, password, tmp_path, protocol)
    devices = fleet.devices
    devices.broker.sync()
    first, second = devices.bridge, second_worker(fleet)
    assert first is not None
    first.start()
    second.start()
    try:
        assert first.connected.wait(10) and second.connected.wait(10)
        assert (first.slot and first.slot.index, second.slot and second.slot.index) == (0, 1)
        assert first.consumer and second.consumer is (protocol == "5")
        device = fleet.enroll()  # enrollment rewrites the password file and reloads the broker
        enrolled = fleet.services.store.get_device(device.id)
        assert enrolled is not None
        counter = fleet.release("1")
        fleet.devices.director.assign(device.id, "tiny", "alice", release=counter)
        first.publish_latest(device.id)

        published = eventually(
            lambda: (a := fleet.services.store.latest_assignment(device.id)) and a.published_at,
            "the broker's acknowledgement",
        )
        assert published is not None
        log = mosquitto.log()
        subscribers = {
            cid for cid in (client_id(0), client_id(1)) if f"Received SUBSCRIBE from {cid}" in log
        }
        expected = {client_id(0), client_id(1)} if protocol == "5" else {client_id(0)}
        assert subscribers == expected
        shared = "$share/control-plane/edgefleet/v1/devices/+/status" in log
        assert shared is (protocol == "5")
    finally:
        second.stop()
        first.stop()
    assert first.slot is not None and first.slot.fd == -1


def test_reports_reach_the_database_through_the_consumer(
    broker: tuple[Broker, str], tmp_path: Path
) -> None:
    mosquitto, password = broker
    fleet = fleet_on(mosquitto, password, tmp_path, "auto")
    bridge = fleet.devices.bridge
    assert bridge is not None
    fleet.devices.broker.sync()
    bridge.start()
    try:
        assert bridge.connected.wait(10) and bridge.protocol == 5
        enrolled = fleet.devices.enrollment.enroll(*_enrollment(fleet))
        device = enrolled.device.id
        probe = mosquitto.probe(device, enrolled.mqtt_password)
        assert probe.connect() == "Success"
        try:
            probe.publish(topic(device, Channel.STATUS), b"{broken")
            report = StatusReport(device, 1, fleet.clock(), UpdateState.IDLE)
            probe.publish(topic(device, Channel.STATUS), report.encode())
        finally:
            probe.close()
        found = eventually(
            lambda: (d := fleet.services.store.get_device(device)) and d.last_seq == 1 and d,
            "the report",
        )
        assert found.malformed_reports == 1
        assert bridge.ingest.stats.snapshot()["accepted"] == 1
    finally:
        bridge.stop()


def _enrollment(fleet: Fleet) -> tuple[str, bytes]:
    from datetime import timedelta

    from fleetcore.keys import PrivateKey
    from tests.unit.control_plane.fleet_support import enrollment

    _, secret = fleet.services.auth.create_enroll_token({}, 1, timedelta(hours=1), "alice")
    return secret, enrollment(PrivateKey.generate())


def test_more_reports_than_the_in_flight_window_all_arrive(
    broker: tuple[Broker, str], tmp_path: Path
) -> None:
    """The broker sends at most 100 unacknowledged messages (edgefleet.conf): without
    acknowledgements after storing, the consumer would stall after the first hundred."""
    mosquitto, password = broker
    fleet = fleet_on(mosquitto, password, tmp_path, "3.1.1")
    bridge = fleet.devices.bridge
    assert bridge is not None
    fleet.devices.broker.sync()
    bridge.start()
    try:
        assert bridge.connected.wait(10)
        enrolled = fleet.devices.enrollment.enroll(*_enrollment(fleet))
        device = enrolled.device.id
        probe = mosquitto.probe(device, enrolled.mqtt_password)
        assert probe.connect() == "Success"
        try:
            for seq in range(1, 351):
                report = StatusReport(device, seq, fleet.clock(), UpdateState.DOWNLOADING)
                probe.client.publish(topic(device, Channel.STATUS), report.encode(), qos=1)
            eventually(lambda: len(probe._acks) == 350, "the broker's acknowledgements", 20)
        finally:
            probe.close()
        eventually(
            lambda: (d := fleet.services.store.get_device(device)) and d.last_seq == 350,
            "350 reports",
            30,
        )
        assert len(fleet.services.store.list_reports(device, limit=500)) == 350
        assert "Received PUBACK from " + client_id(0) in mosquitto.log()
    finally:
        bridge.stop()
