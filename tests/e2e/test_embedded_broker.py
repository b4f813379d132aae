"""Zero setup: ``fleetctl serve`` with no broker URL runs its own MQTT broker (amqtt).

A real control plane with the embedded broker on a free port, a real
``fleet-agent`` that enrolls (and is told the embedded broker's URL), then
receives its desired state over MQTT and reports back over MQTT. Raw MQTT
clients with the device's credential show the broker's security: a wrong
password is refused, and the device can neither read another device's
desired state nor report in its name.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.identity import load_identity
from models.tiny import tiny_onnx_bytes
from tests.e2e.conftest import Server, running_server
from tests.e2e.test_devices import device_info, enroll_token
from tests.support.agent import AgentProcess
from tests.support.net import free_port

WAIT_S = 15.0


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int]]:
    port = free_port()
    env = {
        "EDGEFLEET_MQTT__EMBEDDED": "true",
        "EDGEFLEET_MQTT__EMBEDDED_PORT": str(port),
        "EDGEFLEET_DESIRED_CHECK_S": "0.2",
    }
    with running_server("sqlite", tmp_path_factory.mktemp("control-plane"), env) as server:
        yield server, port


class RawClient:
    """paho MQTT 3.1.1 with a device's credential, for what an agent would never try."""

    def __init__(self, port: int, username: str, password: str, client_id: str) -> None:
        self.connack: queue.Queue[Any] = queue.Queue()
        self.suback: queue.Queue[list[Any]] = queue.Queue()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv311,
            clean_session=True,
        )
        self.client.username_pw_set(username, password)
        self.client.on_connect = lambda _c, _u, _f, reason, _p: self.connack.put(reason)
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.suback.put(codes)
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def connected(self) -> bool:
        try:
            return not self.connack.get(timeout=WAIT_S).is_failure
        except queue.Empty:  # amqtt closes the socket after a refusing CONNACK
            return False

    def subscribe_refused(self, name: str) -> bool:
        self.client.subscribe(name, qos=1)
        return bool(self.suback.get(timeout=WAIT_S)[0].is_failure)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_the_embedded_broker_serves_a_real_agent_and_refuses_intruders(
    embedded: tuple[Server, int], tmp_path: Path, agents: list[AgentProcess]
) -> None:
    server, port = embedded
    assert "embedded MQTT broker (amqtt) listening on 127.0.0.1:" in server.log.read_text()
    with server.admin as client:
        sha = client.post(
            "/v1/artifacts", params={"kind": "onnx"}, content=tiny_onnx_bytes(seed=7)
        ).json()["sha256"]
        body = {"version": "1", "artifact_sha256": sha}
        assert client.post("/v1/models/embedded-tiny/versions", json=body).status_code == 201
    server.cli("release", "create", "embedded-tiny@1")

    token = enroll_token(server, uses=2)
    made = [
        AgentProcess.create(
            tmp_path / name, server=server.url, transport="mqtt", update={"probation_s": 2}
        )
        for name in ("a", "b")
    ]
    agents.extend(made)
    first, second = made
    device_a = first.enroll(token)["device_id"]
    device_b = second.enroll(token)["device_id"]
    identity = load_identity(first.data_dir)
    assert identity.mqtt is not None
    assert identity.mqtt.url == f"mqtt://127.0.0.1:{port}"  # enrollment told it the broker

    first.start()
    first.wait_for_log("connected to the broker with MQTT 3.1.1", timeout_s=60)
    # Connected, and its one reconcile over HTTP is done: the assignment made now
    # can reach it only as a message on its desired topic.
    signed = json.loads(
        server.cli("device", "assign", device_a, "embedded-tiny@1", "-o", "json").stdout
    )
    first.wait_for_state("committed", sequence=signed["sequence"], timeout_s=90)
    deadline = time.monotonic() + 60
    info = device_info(server, device_a)
    while time.monotonic() < deadline and info["state"] != "committed":
        time.sleep(0.2)
        info = device_info(server, device_a)
    assert info["state"] == "committed" and info["current"]["sha256"] == sha
    assert any(r["transport"] == "mqtt" for r in info["reports"])
    assert info["online"] is True

    # A's own credential: wrong password refused; B's session and topics out of reach.
    # (The agent stops first: a client with its id would take its connection over.)
    first.terminate()
    password = identity.mqtt.password
    for username, secret, client_id in (
        (device_a, password + "x", device_a),  # a wrong password
        (device_a, password, device_b),  # B's session
    ):
        refused = RawClient(port, username, secret, client_id)
        assert not refused.connected()
        refused.close()
    server.cli("device", "assign", device_b, "embedded-tiny@1")
    intruder = RawClient(port, device_a, password, device_a)
    try:
        assert intruder.connected()
        assert intruder.subscribe_refused(f"edgefleet/v1/devices/{device_b}/desired")
        assert intruder.subscribe_refused("edgefleet/v1/devices/+/desired")
        forged = intruder.client.publish(
            f"edgefleet/v1/devices/{device_b}/status", b'{"forged": true}', qos=1
        )
        forged.wait_for_publish(WAIT_S)
        with pytest.raises(queue.Empty):  # nothing of B's (or anyone's) leaks to A
            intruder.messages.get(timeout=1.0)
    finally:
        intruder.close()
    assert device_info(server, device_b)["reports"] == []  # the forgery never arrived
    log = server.log.read_text()
    assert f"refused '{device_a}' subscribe on 'edgefleet/v1/devices/{device_b}/desired'" in log
    assert f"refused '{device_a}' publish on 'edgefleet/v1/devices/{device_b}/status'" in log
    assert password not in log
