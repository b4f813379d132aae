"""The real ``fleet-agent`` against the real control plane and its Mosquitto broker.

The agent and the control plane were written against docs/protocol.md by
different hands; this is where the two meet: enrollment, the desired state
over MQTT (or the HTTP long-poll), artifact download with the device token,
and status reports that move the device to ``committed`` on the server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models.tiny import tiny_onnx_bytes
from tests.e2e.conftest import FleetServer, Server
from tests.support.agent import AgentProcess


def device_info(server: Server, device_id: str) -> dict[str, Any]:
    with server.admin as client:
        info: dict[str, Any] = client.get(f"/v1/devices/{device_id}").json()
        return info


def wait_server_state(server: Server, device_id: str, state: str, sequence: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    info: dict[str, Any] = {}
    while time.monotonic() < deadline:
        info = device_info(server, device_id)
        if info["state"] == state and info["state_sequence"] == sequence:
            return info
        time.sleep(0.2)
    raise AssertionError(f"the control plane never saw {state} for {sequence}: {info}")


@pytest.fixture(scope="module")
def released(fleet_server: FleetServer) -> str:
    server = fleet_server.server
    with server.admin as client:
        sha: str = client.post(
            "/v1/artifacts", params={"kind": "onnx"}, content=tiny_onnx_bytes(seed=5)
        ).json()["sha256"]
        body = {"version": "1", "artifact_sha256": sha}
        assert client.post("/v1/models/agent-tiny/versions", json=body).status_code == 201
    server.cli("release", "create", "agent-tiny@1")
    return sha


@pytest.fixture
def agent_dir(tmp_path: Path) -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.stop()


@pytest.mark.parametrize("transport", ["mqtt", "http"])
def test_a_real_agent_enrolls_installs_and_reports_committed(
    fleet_server: FleetServer,
    released: str,
    tmp_path: Path,
    agent_dir: list[AgentProcess],
    transport: str,
) -> None:
    server = fleet_server.server
    with server.admin as client:
        token = client.post(
            "/v1/enroll-tokens", json={"labels": {"site": "lab"}, "max_uses": 1}
        ).json()["token"]
    agent = AgentProcess.create(
        tmp_path / "agent", server=server.url, transport=transport, update={"probation_s": 2}
    )
    agent_dir.append(agent)
    status = agent.enroll(token, labels={"ring": "canary"})
    device_id = status["device_id"]
    info = device_info(server, device_id)
    assert info["labels"] == {"ring": "canary", "site": "lab"}
    agent.start()

    signed = json.loads(
        server.cli("device", "assign", device_id, "agent-tiny@1", "-o", "json").stdout
    )

    agent.wait_for_state("committed", sequence=signed["sequence"], timeout_s=90)
    info = wait_server_state(server, device_id, "committed", signed["sequence"])
    assert info["current"]["sha256"] == released
    assert info["current"]["model"] == "agent-tiny"
    if transport == "mqtt":
        assert any(r["transport"] == "mqtt" for r in info["reports"])
        assert info["online"] is True
