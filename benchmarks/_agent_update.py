"""The ``assignment_to_commit`` figure of ``benchmarks.agent``.

A whole fleet of one on loopback, all real: a Mosquitto broker with the
project's policy, ``fleetctl serve`` (SQLite) keeping the broker's password
file, and one ``fleet-agent run`` enrolled over HTTP and connected over MQTT.
Each round releases a fresh 1 MB model (so nothing is cached on the device),
then times from the moment ``POST /v1/devices/{id}/assignment`` returns (the
director has signed and published the desired state) until the agent's
``committed`` status report arrives on the broker, seen by a subscriber with
the control plane's credential. Probation is set to 0 s: the figure measures
the update machinery (verify, download, hash, stage, smoke test, activate,
commit, report), not a waiting policy.

The baseline, measured in the same run, is what the bytes alone cost: one
HTTP GET of the same 1 MB artifact from the same server plus one MQTT round
trip (publish, then receive) on the same broker.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from fleetcore.protocol import Channel, StatusReport, UpdateState, topic
from models.tiny import tiny_onnx_bytes
from tests.e2e.conftest import Server, running_server
from tests.support.agent import AgentProcess
from tests.support.mosquitto import Broker, Probe, start_broker

MODEL = "bench-update"
SIZE_BYTES = 1 << 20
Figure = dict[str, Any]


@contextlib.contextmanager
def _fleet(workdir: Path) -> Iterator[tuple[Server, Broker, str]]:
    password = secrets.token_urlsafe(24)
    broker = start_broker(workdir / "broker", {"control-plane": password})
    env = {
        "EDGEFLEET_MQTT__URL": broker.url,
        "EDGEFLEET_MQTT__PASSWORD": password,
        "EDGEFLEET_MQTT__PASSWORD_FILE": str(broker.password_file),
        "EDGEFLEET_MQTT__BROKER_PID_FILE": str(broker.pid_file),
    }
    try:
        (workdir / "cp").mkdir()
        with running_server("sqlite", workdir / "cp", env) as server:
            yield server, broker, password
    finally:
        broker.stop()


def _release(server: Server, version: int) -> str:
    data = tiny_onnx_bytes(seed=version, pad_bytes=SIZE_BYTES - 300)
    with server.admin as client:
        sha: str = (
            client.post("/v1/artifacts", params={"kind": "onnx"}, content=data)
            .raise_for_status()
            .json()["sha256"]
        )
        client.post(
            f"/v1/models/{MODEL}/versions", json={"version": str(version), "artifact_sha256": sha}
        ).raise_for_status()
        client.post(
            "/v1/releases", json={"model": MODEL, "version": str(version)}
        ).raise_for_status()
    return sha


def _wait_committed(probe: Probe, sequence: int, timeout_s: float = 60) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = probe.next_message(timeout_s=1)
        if message is None:
            continue
        report = StatusReport.decode(message.payload)
        if report.assignment_sequence == sequence and report.state is UpdateState.COMMITTED:
            return time.perf_counter()
        if report.assignment_sequence == sequence and report.state.terminal:
            raise RuntimeError(f"the update ended {report.state.value}: {report.message}")
    raise RuntimeError("no committed report within the timeout")


def _baseline(server: Server, probe: Probe, device_token: str, sha: str, device: str) -> float:
    start = time.perf_counter()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.get(
            f"/v1/artifacts/{sha}", headers={"Authorization": f"Bearer {device_token}"}
        )
        response.raise_for_status()
    probe.publish(topic(device, Channel.STATUS), b"ping", qos=1)
    while (message := probe.next_message(timeout_s=5)) is not None:
        if message.payload == b"ping":
            break
    return time.perf_counter() - start


def assignment_to_commit(rounds: int = 5) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-update-") as tmp:
        workdir = Path(tmp)
        with _fleet(workdir) as (server, broker, password):
            shas = [_release(server, version) for version in range(1, rounds + 2)]
            with server.admin as client:
                token = client.post("/v1/enroll-tokens", json={}).raise_for_status().json()["token"]
            sock = workdir / "agent.sock"
            agent = AgentProcess.create(
                workdir / "agent",
                server=server.url,
                transport="mqtt",
                update={"probation_s": 0.0},
                local_api={"listen": f"unix:{sock}"},
            )
            device = agent.enroll(token)["device_id"]
            device_token = json.loads((agent.data_dir / "identity" / "device.json").read_text())[
                "device_token"
            ]
            probe = broker.probe("control-plane", password)
            probe.connect()
            probe.subscribe(topic(device, Channel.STATUS))
            agent.start()
            try:
                timings, baselines = [], []
                for index, version in enumerate(range(1, rounds + 2)):
                    with server.admin as client:
                        answer = client.post(
                            f"/v1/devices/{device}/assignment",
                            json={"model": MODEL, "version": str(version)},
                        ).raise_for_status()
                        start = time.perf_counter()
                    sequence = int(answer.json()["sequence"])
                    elapsed = _wait_committed(probe, sequence) - start
                    if index:  # the first round warms the agent's imports and the server
                        timings.append(elapsed)
                        baselines.append(
                            _baseline(server, probe, device_token, shas[index], device)
                        )
                rss = _serving_rss(agent, sock)
            finally:
                agent.stop()
                probe.close()
    median = statistics.median(timings)
    base = statistics.median(baselines)
    return [
        {
            "benchmark": "agent",
            "figure": "assignment_to_commit",
            "model_bytes": SIZE_BYTES,
            "transport": "mqtt",
            "probation_s": 0.0,
            "median_s": round(median, 3),
            "max_s": round(max(timings), 3),
            "target_s": 1.0,
            "baseline_download_plus_mqtt_rtt_s": round(base, 4),
            "ratio_vs_baseline": round(median / base, 1),
            "rounds": len(timings),
            "statistic": "median",
        },
        {
            "benchmark": "agent",
            "figure": "agent_process_rss",
            "process": "fleet-agent run (MQTT connected, 1 MB ONNX model active, local API)",
            **rss,
            "target_mib": 64,
        },
    ]


def _serving_rss(agent: AgentProcess, sock: Path, requests: int = 2000) -> dict[str, Any]:
    """VmRSS and VmHWM of the real agent process after it served ``requests``."""
    from agent.local import Client

    client = Client(f"unix:{sock}")
    batch = {"features": [[0.1, 0.2, 0.3, 0.4]]}
    for _ in range(requests):
        client.infer(batch)
    assert agent.process is not None
    fields = {}
    for line in Path(f"/proc/{agent.process.pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return {
        "vm_rss_mib": fields["VmRSS"],
        "vm_hwm_mib": fields["VmHWM"],
        "after_requests": requests,
    }


__all__ = ["assignment_to_commit"]
