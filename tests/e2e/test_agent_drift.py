"""A real agent's drift summaries and telemetry, from its local API to the control plane.

A sensor model is pushed with reference data (so its release signs a drift
reference), released and assigned to a real ``fleet-agent`` connected to the
real Mosquitto. Inference through the agent's local API, and feedback for it,
must come out as drift summaries (bound to the signed reference digest) and
telemetry windows, delivered over MQTT and stored by the control plane.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from agent._channel_outbox import ChannelOutbox
from agent._observers import channel_limits
from agent.config import load_config
from agent.statedb import StateDB
from fleetcore.drift.encoding import decode
from tests.conftest import SensorBuild
from tests.e2e.conftest import Datasets, FleetServer
from tests.support.agent import AgentProcess
from tests.support.net import free_port

WINDOW_S = 2


def released_sensor(
    fleet_server: FleetServer, sensor_build: SensorBuild, datasets: Datasets
) -> str:
    server = fleet_server.server
    done = server.cli(
        "model", "push", sensor_build.model("float"), "--name", "drift-sensor",
        "--version", "1", "-o", "json", "--eval-data", datasets.eval,
        "--reference-data", datasets.reference,
    )  # fmt: skip
    version = json.loads(done.stdout)
    assert version["state"] == "validated", version["reasons"]
    assert version["drift_reference_sha256"]
    server.cli("release", "create", "drift-sensor@1")
    return str(version["drift_reference_sha256"])


def queue_of(agent: AgentProcess) -> ChannelOutbox:
    config = load_config(agent.config_path)
    return ChannelOutbox(StateDB.open(config.data_dir), channel_limits(config))


def open_store(server: Any) -> Any:
    """The control plane's own store, on the database the server runs on."""
    from control_plane.db import make_engine
    from control_plane.store.sql import SqlStore

    url = (
        server.env.get("EDGEFLEET_DATABASE_URL") or f"sqlite:///{server.data_dir / 'edgefleet.db'}"
    )
    return SqlStore(make_engine(url))


def test_drift_summaries_and_telemetry_reach_the_control_plane(
    fleet_server: FleetServer,
    sensor_build: SensorBuild,
    datasets: Datasets,
    tmp_path: Path,
    agents: list[AgentProcess],
) -> None:
    reference_sha = released_sensor(fleet_server, sensor_build, datasets)
    server = fleet_server.server
    with server.admin as client:
        token = client.post("/v1/enroll-tokens", json={"labels": {}, "max_uses": 1}).json()["token"]
    port = free_port()
    agent = AgentProcess.create(
        tmp_path / "agent",
        server=server.url,
        transport="mqtt",
        update={"probation_s": 1},
        local_api={"listen": f"127.0.0.1:{port}"},
        drift={"window_s": WINDOW_S},
        telemetry={"window_s": WINDOW_S},
    )
    agents.append(agent)
    device = agent.enroll(token)["device_id"]
    agent.start()
    signed = json.loads(
        server.cli("device", "assign", device, "drift-sensor@1", "-o", "json").stdout
    )
    agent.wait_for_state("committed", sequence=signed["sequence"], timeout_s=120)

    with np.load(datasets.reference, allow_pickle=False) as npz:
        rows = np.asarray(npz["x"], dtype=np.float32)[:64]
    ids = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as local:
        agent.wait_for_log("drift probe bound to drift-sensor@1", timeout_s=60)
        for start in range(0, len(rows), 8):
            answer = local.post("/v1/infer", json={"inputs": rows[start : start + 8].tolist()})
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["request_id"])
        feedback = local.post("/v1/feedback", json={"request_id": ids[0], "label": [0] * 8})
        assert feedback.status_code == 200, feedback.text
        assert feedback.json()["counted"] is True

    # The agent queued summaries and telemetry, and the broker acknowledged them all.
    queue = queue_of(agent)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        drift, telemetry = queue.stats("drift"), queue.stats("telemetry")
        if drift.next_seq > 1 and telemetry.next_seq > 1 and not drift.depth + telemetry.depth:
            break
        time.sleep(0.5)
    else:
        log = agent.log_path.read_text()[-4000:]
        raise AssertionError(f"payloads not delivered: {drift}, {telemetry}\n{log}")
    assert drift.dropped == 0 and telemetry.dropped == 0

    # The control plane stored them (each (device, seq) once), bound to the signed reference.
    store = open_store(server)
    since = datetime.now(timezone.utc) - timedelta(hours=1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        windows = [w for w in store.drift_windows("drift-sensor") if w.device_id == device]
        totals = store.telemetry_by_release("drift-sensor", since=since)
        if sum(w.samples for w in windows) >= len(rows) and 1 in totals:
            break
        time.sleep(0.5)
    assert sum(w.samples for w in windows) == len(rows), windows
    assert {(w.release, w.reference) for w in windows} == {(1, reference_sha)}
    merged = [decode(w.payload).body for w in windows]
    assert sum(int(b.labelled.sum()) for b in merged) == 8
    # One model run per request: telemetry counts requests, drift counts rows.
    assert totals[1].inferences == len(ids)
    assert totals[1].devices == 1
