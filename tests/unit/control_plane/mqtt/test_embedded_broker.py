"""The embedded broker for real: amqtt in its thread, paho clients over TCP.

The store is a small fake (the broker only looks devices up by id); the
broker, the plugins and the clients are the real ones, on a free port.
"""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import SecretStr

from control_plane.config import Settings
from control_plane.mqtt.embedded import EmbeddedBroker, EmbeddedBrokerError, prepare_embedded
from control_plane.mqtt.passwords import hash_password
from control_plane.store import Store
from fleetcore.protocol import Channel, topic

A = "dev-" + "a" * 20
B = "dev-" + "b" * 20
WAIT_S = 10.0


@dataclass
class FakeDevice:
    mqtt_password_hash: str
    decommissioned_at: datetime | None = None


class FakeStore:
    def __init__(self) -> None:
        self.devices = {A: FakeDevice(hash_password("pw-a")), B: FakeDevice(hash_password("pw-b"))}

    def get_device(self, device_id: str) -> FakeDevice | None:
        return self.devices.get(device_id)


class Client:
    """A paho MQTT 3.1.1 client that records what happens to it."""

    def __init__(self, port: int, username: str | None, password: str | None, client_id: str):
        self.port = port
        self.connack: queue.Queue[Any] = queue.Queue()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.suback: queue.Queue[list[Any]] = queue.Queue()
        self.disconnected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv311,
            clean_session=False,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda _c, _u, _f, reason, _p: self.connack.put(reason)
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.suback.put(codes)
        self.client.on_disconnect = lambda *_: self.disconnected.set()

    def connect(self, will: str | None = None) -> bool:
        if will is not None:
            self.client.will_set(will, b"offline", qos=1, retain=True)
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        try:
            reason = self.connack.get(timeout=WAIT_S)
        except queue.Empty:  # amqtt closes the socket after a refusing CONNACK
            return False
        return not reason.is_failure

    def subscribe(self, name: str) -> bool:
        self.client.subscribe(name, qos=1)
        codes = self.suback.get(timeout=WAIT_S)
        return not codes[0].is_failure

    def publish(self, name: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(name, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)

    def next_message(self, timeout_s: float = WAIT_S) -> mqtt.MQTTMessage | None:
        try:
            return self.messages.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, mqtt={"embedded_port": 0})  # type: ignore[arg-type]


@pytest.fixture
def running(settings: Settings) -> Iterator[tuple[Settings, EmbeddedBroker, FakeStore]]:
    effective, broker = prepare_embedded(settings)
    assert broker is not None
    store = FakeStore()
    broker.start(cast(Store, store))
    try:
        yield effective, broker, store
    finally:
        broker.stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def connect(
    clients: list[Client],
    broker: EmbeddedBroker,
    username: str | None,
    password: str | None,
    client_id: str | None = None,
    will: str | None = None,
) -> tuple[Client, bool]:
    client = Client(broker.plan.port, username, password, client_id or username or "anon")
    clients.append(client)
    return client, client.connect(will)


def bridge(clients: list[Client], effective: Settings, broker: EmbeddedBroker) -> Client:
    password = effective.mqtt.password
    assert password is not None
    client, ok = connect(
        clients, broker, effective.mqtt.username, password.get_secret_value(), "edgefleet-cp-t-0"
    )
    assert ok
    return client


# -- settings -------------------------------------------------------------------------------


def test_prepare_turns_the_settings_into_those_of_a_local_broker(tmp_path: Path) -> None:
    plain = Settings(data_dir=tmp_path)
    effective, broker = prepare_embedded(plain)
    assert broker is not None
    mqtt_settings = effective.mqtt
    assert mqtt_settings.url == "mqtt://127.0.0.1:1883"
    assert mqtt_settings.devices_url == "mqtt://127.0.0.1:1883"
    assert mqtt_settings.protocol == "3.1.1"
    assert mqtt_settings.shared_group == ""
    assert mqtt_settings.password is not None and len(mqtt_settings.password) >= 32
    assert mqtt_settings.password_file is None
    assert plain.mqtt.url is None  # the caller's settings are left alone
    _, again = prepare_embedded(plain)
    assert again is not None and again.plan.bridge_password != broker.plan.bridge_password


def test_prepare_advertises_the_host_name_or_the_device_url(tmp_path: Path) -> None:
    lan = Settings(data_dir=tmp_path, mqtt={"embedded_bind": "0.0.0.0", "embedded_port": 1884})  # type: ignore[arg-type]
    effective, _ = prepare_embedded(lan)
    assert effective.mqtt.url == "mqtt://127.0.0.1:1884"
    assert effective.mqtt.devices_url == f"mqtt://{socket.gethostname()}:1884"
    told = Settings(
        data_dir=tmp_path,
        mqtt={"embedded_bind": "0.0.0.0", "device_url": "mqtt://gateway.lan:1883"},  # type: ignore[arg-type]
    )
    assert prepare_embedded(told)[0].mqtt.devices_url == "mqtt://gateway.lan:1883"


def test_an_external_broker_or_embedded_off_means_no_embedded_broker(tmp_path: Path) -> None:
    external = Settings(
        data_dir=tmp_path,
        mqtt={"url": "mqtt://broker:1883", "password": SecretStr("a-real-one")},  # type: ignore[arg-type]
    )
    assert prepare_embedded(external) == (external, None)
    off = Settings(data_dir=tmp_path, mqtt={"embedded": False})  # type: ignore[arg-type]
    assert prepare_embedded(off) == (off, None)
    reserved = Settings(data_dir=tmp_path, mqtt={"username": A})  # type: ignore[arg-type]
    with pytest.raises(EmbeddedBrokerError, match="reserved"):
        prepare_embedded(reserved)


# -- the running broker -----------------------------------------------------------------------


def test_devices_reach_the_bridge_and_the_bridge_reaches_devices(
    running: tuple[Settings, EmbeddedBroker, FakeStore], clients: list[Client]
) -> None:
    effective, broker, _ = running
    cp = bridge(clients, effective, broker)
    assert cp.subscribe("edgefleet/v1/devices/+/status")
    cp.publish(topic(A, Channel.DESIRED), b"desired-a", retain=True)
    device, ok = connect(clients, broker, A, "pw-a", will=topic(A, Channel.PRESENCE))
    assert ok
    assert device.subscribe(topic(A, Channel.DESIRED))
    got = device.next_message()
    assert got is not None and got.payload == b"desired-a" and got.retain  # retained
    device.publish(topic(A, Channel.STATUS), b"report")
    got = cp.next_message()
    assert got is not None and got.topic == topic(A, Channel.STATUS) and got.qos == 1


def test_wrong_passwords_and_anonymous_clients_are_refused(
    running: tuple[Settings, EmbeddedBroker, FakeStore], clients: list[Client]
) -> None:
    _, broker, store = running
    assert not connect(clients, broker, A, "pw-b")[1]
    assert not connect(clients, broker, None, None, client_id="someone")[1]
    assert not connect(clients, broker, "control-plane", "guess", "edgefleet-cp-x-0")[1]
    assert not connect(clients, broker, A, "pw-a", client_id=B)[1]  # B's session
    assert not connect(clients, broker, A, "pw-a", will=topic(B, Channel.PRESENCE))[1]
    store.devices[B].decommissioned_at = datetime.now(timezone.utc)
    assert not connect(clients, broker, B, "pw-b")[1]


def test_a_device_cannot_touch_another_devices_topics(
    running: tuple[Settings, EmbeddedBroker, FakeStore], clients: list[Client]
) -> None:
    effective, broker, _ = running
    cp = bridge(clients, effective, broker)
    assert cp.subscribe("edgefleet/v1/devices/+/status")
    cp.publish(topic(B, Channel.DESIRED), b"desired-b", retain=True)
    device, ok = connect(clients, broker, A, "pw-a")
    assert ok
    assert not device.subscribe(topic(B, Channel.DESIRED))
    assert not device.subscribe("edgefleet/v1/devices/+/desired")
    assert not device.subscribe("#")
    device.publish(topic(B, Channel.STATUS), b"forged")  # accepted, then dropped
    device.publish(topic(A, Channel.DESIRED), b"self-assigned")
    device.publish(topic(A, Channel.STATUS), b"genuine")
    got = cp.next_message()
    assert got is not None and got.payload == b"genuine"
    assert cp.next_message(0.5) is None
    assert device.next_message(0.5) is None  # no desired state of B's leaked


def test_a_decommissioned_device_is_disconnected(
    running: tuple[Settings, EmbeddedBroker, FakeStore], clients: list[Client]
) -> None:
    effective, broker, store = running
    cp = bridge(clients, effective, broker)
    assert cp.subscribe("edgefleet/v1/devices/+/presence")
    device, ok = connect(clients, broker, A, "pw-a", will=topic(A, Channel.PRESENCE))
    assert ok
    store.devices[A].decommissioned_at = datetime.now(timezone.utc)
    broker.disconnect(A)
    assert device.disconnected.wait(WAIT_S)
    got = cp.next_message()
    assert got is not None and got.payload == b"offline"  # its last will


def test_one_process_per_data_directory_and_a_taken_port_are_clear_errors(
    running: tuple[Settings, EmbeddedBroker, FakeStore], settings: Settings, tmp_path: Path
) -> None:
    _, second = prepare_embedded(settings)
    assert second is not None
    with pytest.raises(EmbeddedBrokerError, match="another process"):
        second.start(cast(Store, FakeStore()))
    _, first, _ = running
    elsewhere = Settings(
        data_dir=tmp_path / "other",
        mqtt={"embedded_port": first.plan.port},  # type: ignore[arg-type]
    )
    _, clash = prepare_embedded(elsewhere)
    assert clash is not None
    with pytest.raises(EmbeddedBrokerError, match=f"cannot listen on 127.0.0.1:{first.plan.port}"):
        clash.start(cast(Store, FakeStore()))
    clash.stop()  # idempotent after a failed start


# -- amqtt's habits, corrected (control_plane/mqtt/_amqtt_broker.py) -----------------------------


def test_a_refused_connect_leaves_the_session_of_its_client_id_alone(
    running: tuple[Settings, EmbeddedBroker, FakeStore], clients: list[Client]
) -> None:
    effective, broker, _ = running
    cp = bridge(clients, effective, broker)
    assert cp.subscribe("edgefleet/v1/devices/+/status")
    for clean in (True, False):  # would delete, or take over, the bridge's session
        attacker = Client(broker.plan.port, "control-plane", "guess", "edgefleet-cp-t-0")
        attacker.client._clean_session = clean
        clients.append(attacker)
        assert not attacker.connect()
    assert not cp.disconnected.is_set()
    device, ok = connect(clients, broker, A, "pw-a")
    assert ok
    device.publish(topic(A, Channel.STATUS), b"still-subscribed")
    got = cp.next_message()
    assert got is not None and got.payload == b"still-subscribed"


def test_retained_messages_reach_only_those_who_may_receive_them(
    running: tuple[Settings, EmbeddedBroker, FakeStore], clients: list[Client]
) -> None:
    effective, broker, _ = running
    cp = bridge(clients, effective, broker)
    other, ok = connect(clients, broker, B, "pw-b")
    assert ok and other.subscribe(topic(B, Channel.DESIRED))  # B's filter now exists
    cp.publish(topic(B, Channel.DESIRED), b"desired-b", retain=True)
    got = other.next_message()
    assert got is not None and got.payload == b"desired-b"
    device, ok = connect(clients, broker, A, "pw-a")
    assert ok and device.subscribe(topic(A, Channel.DESIRED))
    assert device.next_message(1.0) is None  # amqtt alone sends A every retained match
