"""Telemetry and drift summaries through a real Mosquitto into SQLite and PostgreSQL.

Devices enroll over HTTP and publish with their own broker credential (paho,
QoS 1): valid telemetry and drift summaries, and among them malformed JSON,
bad binary, spoofed, replayed and oversized messages. Every valid window must
be stored exactly once, every bad one counted by reason on ``/metrics``, and
the consumer must keep going. The release's drift reference is the one the
control plane built from reference data at registration, so summaries made
against it are accepted and summaries against another digest are refused.

The server runs its workers in prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``), so ``/metrics`` adds up every worker's
counters whichever worker answers.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from control_plane.db.engine import make_engine
from control_plane.store import TelemetryAggregate
from control_plane.store.sql import SqlStore
from fleetcore.drift import DriftReference
from fleetcore.drift.encoding import encode
from fleetcore.drift.summary import DriftAccumulator, DriftSummary, WindowKey
from fleetcore.protocol import Channel, topic
from fleetcore.telemetry import LATENCY_BUCKETS, TelemetryReport
from models.tiny import CLASSES, FEATURES, tiny_onnx_bytes
from tests.e2e.conftest import FleetServer, running_fleet_server
from tests.e2e.test_devices import Device, connect, enroll, wait_for

MODEL = "tiny-drift"
WINDOWS_PER_DEVICE = 20

#: Two days ago, on the hour: within raw retention (7 days), and every window the
#: tests send (up to 2,000 minutes later) is in the past for the server.
T0 = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)


@dataclass
class Setup:
    release: int
    reference: DriftReference
    devices: list[Device]
    store: SqlStore


def _npz(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)  # type: ignore[arg-type]
    return out.getvalue()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fleet_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetServer]:
    """As the conftest's, with the workers' metrics added up across processes."""
    metrics = str(tmp_path_factory.mktemp("metrics"))
    extra_env = {"PROMETHEUS_MULTIPROC_DIR": metrics}
    with running_fleet_server(request.param, tmp_path_factory, extra_env) as started:
        yield started


@pytest.fixture(scope="module")
def setup(fleet_server: FleetServer) -> Iterator[Setup]:
    server = fleet_server.server
    rng = np.random.default_rng(7)
    with server.admin as client:
        model = client.post("/v1/artifacts", params={"kind": "onnx"}, content=tiny_onnx_bytes())
        data = _npz(x=rng.normal(size=(300, FEATURES)).astype(np.float32))
        reference = client.post("/v1/artifacts", params={"kind": "npz"}, content=data)
        version = client.post(
            f"/v1/models/{MODEL}/versions",
            json={
                "version": "1",
                "artifact_sha256": model.json()["sha256"],
                "reference_data_sha256": reference.json()["sha256"],
            },
        )
        assert version.status_code == 201, version.text
        digest = version.json()["drift_reference_sha256"]
        assert digest, version.json()
        reference_bytes = client.get(f"/v1/artifacts/{digest}").content
    created = json.loads(server.cli("release", "create", f"{MODEL}@1", "-o", "json").stdout)
    url = (
        server.env.get("EDGEFLEET_DATABASE_URL") or f"sqlite:///{server.data_dir / 'edgefleet.db'}"
    )
    store = SqlStore(make_engine(url))
    try:
        yield Setup(
            release=created["counter"],
            reference=DriftReference.from_bytes(reference_bytes),
            devices=[enroll(server) for _ in range(3)],
            store=store,
        )
    finally:
        store._engine.dispose()


def summary(setup: Setup, device: str, seq: int, *, reference: str | None = None) -> bytes:
    acc = DriftAccumulator(setup.reference)
    rng = np.random.default_rng(seq)
    logits = rng.normal(size=(16, CLASSES))
    acc.update(
        rng.normal(size=(16, FEATURES)), np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    )
    key = WindowKey(
        device=device,
        model=MODEL,
        release=setup.release,
        reference=reference or setup.reference.digest(),
        start=int(T0.timestamp()) + 60 * seq,
        length=60,
        seq=seq,
    )
    return encode(DriftSummary(key, acc.take()))


def telemetry(setup: Setup, device: str, seq: int) -> bytes:
    buckets = [0] * LATENCY_BUCKETS
    buckets[25] = seq
    return TelemetryReport(
        device=device,
        seq=seq,
        time=T0,
        window_start=int(T0.timestamp()) + 60 * seq,
        window_s=60,
        model=MODEL,
        release=setup.release,
        inferences=seq,
        errors=0,
        input_errors=0,
        latency_buckets=tuple(buckets),
    ).encode()


def metric(fleet_server: FleetServer, name: str, **labels: str) -> float:
    with fleet_server.server.admin as client:
        text = client.get("/metrics").text
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_every_valid_window_is_stored_once_and_every_bad_one_counted(
    fleet_server: FleetServer, setup: Setup
) -> None:
    bad: dict[str, int] = {}
    first, second, third = setup.devices
    for device in setup.devices:
        probe = connect(fleet_server, device)
        own_drift = topic(device.id, Channel.DRIFT)
        own_telemetry = topic(device.id, Channel.TELEMETRY)
        try:
            for seq in range(1, WINDOWS_PER_DEVICE + 1):
                probe.publish(own_drift, summary(setup, device.id, seq))
                probe.publish(own_telemetry, telemetry(setup, device.id, seq))
            # replays of the first windows: duplicates, not stored again
            probe.publish(own_drift, summary(setup, device.id, 1))
            probe.publish(own_telemetry, telemetry(setup, device.id, 1))
        finally:
            probe.close()
    probe = connect(fleet_server, first)
    try:
        own_drift, own_telemetry = (
            topic(first.id, Channel.DRIFT),
            topic(first.id, Channel.TELEMETRY),
        )
        probe.publish(own_telemetry, b'{"_type": "telemetry", broken')
        probe.publish(own_drift, b"EFDS\x01\x00 not a summary")
        bad["malformed"] = 2
        probe.publish(own_drift, summary(setup, second.id, 99))  # names another device
        probe.publish(own_telemetry, telemetry(setup, third.id, 99))
        bad["spoofed"] = 2
        probe.publish(own_drift, b"\0" * (64 * 1024 + 10))
        probe.publish(own_telemetry, b" " * (16 * 1024 + 10))
        bad["oversize"] = 2
        probe.publish(own_drift, summary(setup, first.id, 500, reference="ab" * 32))
        bad["wrong_reference"] = 1
        # After all that, the consumer still stores what is valid.
        probe.publish(own_drift, summary(setup, first.id, 1000))
    finally:
        probe.close()

    expected_drift = 3 * WINDOWS_PER_DEVICE + 1
    wait_for(
        lambda: len(setup.store.drift_windows(MODEL)) == expected_drift,
        f"{expected_drift} drift windows stored",
        timeout_s=60,
    )
    windows = setup.store.drift_windows(MODEL)
    keys = [(w.device_id, w.window_start) for w in windows]
    assert len(keys) == len(set(keys)) == expected_drift
    assert {w.device_id for w in windows} == {d.id for d in setup.devices}

    def all_telemetry() -> TelemetryAggregate | None:
        found = setup.store.telemetry_by_release(MODEL, since=T0).get(setup.release)
        return found if found and found.windows == 3 * WINDOWS_PER_DEVICE else None

    health = wait_for(all_telemetry, "every telemetry window stored")
    assert health.devices == 3
    assert health.inferences == 3 * sum(range(1, WINDOWS_PER_DEVICE + 1))

    def dropped() -> dict[str, float]:
        return {r: metric(fleet_server, "edgefleet_ingest_dropped_total", reason=r) for r in bad}

    wait_for(lambda: dropped() == bad, f"drops counted as {bad}")
    assert metric(fleet_server, "edgefleet_ingest_duplicates_total") == 6
    assert metric(fleet_server, "edgefleet_ingest_stored_total", channel="drift") == expected_drift
    log = fleet_server.server.log.read_text()
    assert f"on {topic(first.id, Channel.DRIFT)}: wrong_reference" in log
    assert "not a summary" not in log  # payloads are never logged
    assert first.mqtt_password not in log


def test_devices_post_over_http_into_the_same_tables(
    fleet_server: FleetServer, setup: Setup
) -> None:
    device = setup.devices[2]
    with device.http(fleet_server.server) as client:
        posted = client.post(
            f"/v1/devices/{device.id}/drift",
            content=summary(setup, device.id, 2000),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert posted.status_code == 200, posted.text
        assert posted.json() == {"accepted": 1, "duplicates": 0}
        report = json.loads(telemetry(setup, device.id, 3000))
        body = json.dumps({"reports": [report, report]}).encode()
        sent = client.post(f"/v1/devices/{device.id}/telemetry", content=body)
        assert sent.json() == {"accepted": 1, "duplicates": 1}
        refused = client.post(
            f"/v1/devices/{device.id}/drift",
            content=summary(setup, device.id, 2001, reference="cd" * 32),
        )
        assert refused.status_code == 422
    starts = {w.window_start for w in setup.store.drift_windows(MODEL, devices=[device.id])}
    assert T0.timestamp() + 60 * 2000 in {s.timestamp() for s in starts}
