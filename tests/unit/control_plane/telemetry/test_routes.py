"""The HTTP routes: device posts (telemetry, drift, captures), capture listing, /metrics."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from control_plane.main import create_app
from control_plane.store import Role
from fleetcore import canonical
from fleetcore.keys import PrivateKey
from tests.unit.control_plane.fleet_support import Fleet, enrollment, make_fleet
from tests.unit.control_plane.telemetry.support import MODEL, T0, drift_bytes, stock, telemetry


class Rig:
    def __init__(self, fleet: Fleet, client: TestClient) -> None:
        self.fleet = fleet
        self.client = client
        _, secret = fleet.services.auth.create_enroll_token({}, 2, timedelta(hours=1), "alice")
        self.devices = []
        for _ in range(2):
            enrolled = fleet.devices.enrollment.enroll(secret, enrollment(PrivateKey.generate()))
            self.devices.append((enrolled.device.id, enrolled.token))
        _, self.operator = fleet.services.auth.create_api_token("ops", Role.OPERATOR, None, "alice")

    def post(self, which: int, path: str, body: bytes, **params: Any) -> Any:
        device, token = self.devices[which]
        return self.client.post(
            f"/v1/devices/{device}/{path}",
            content=body,
            params=params,
            headers={"Authorization": f"Bearer {token}"},
        )


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    fleet = make_fleet(tmp_path)
    fleet.clock.now = T0 + timedelta(hours=1)
    stock(fleet.services.store, 0)
    with TestClient(create_app(fleet.services.settings, services=fleet.services)) as client:
        yield Rig(fleet, client)


def ours(report_device: str, seq: int) -> dict[str, Any]:
    import dataclasses

    return dataclasses.replace(telemetry(1, seq), device=report_device).to_dict()


def npz(rows: int = 5, **arrays: Any) -> bytes:
    data: dict[str, Any] = {
        "x": np.ones((rows, 3), dtype=np.float32),
        "y": np.array([0, 1, -1, -1, 1][:rows], dtype=np.int64),
        "time": np.arange(rows, dtype=np.int64),
    }
    data.update(arrays)
    out = io.BytesIO()
    np.savez(out, **data)
    return out.getvalue()


def test_devices_post_telemetry_for_themselves_only(rig: Rig) -> None:
    device, _ = rig.devices[0]
    body = canonical.encode({"reports": [ours(device, 1), ours(device, 2)]})
    answer = rig.post(0, "telemetry", body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 2, "duplicates": 0}
    assert rig.post(0, "telemetry", body).json() == {"accepted": 0, "duplicates": 2}
    other, _ = rig.devices[1]
    forbidden = rig.client.post(
        f"/v1/devices/{other}/telemetry",
        content=body,
        headers={"Authorization": f"Bearer {rig.devices[0][1]}"},
    )
    assert forbidden.status_code == 403
    bad = rig.post(0, "telemetry", b'{"reports": 1}')
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_input"


def test_devices_post_drift_summaries(rig: Rig) -> None:
    device, _ = rig.devices[0]
    good = drift_bytes(0, 1, device=device)
    answer = rig.post(0, "drift", good)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 1, "duplicates": 0}
    assert rig.post(0, "drift", good).json()["duplicates"] == 1
    assert rig.post(0, "drift", b"\0" * (64 * 1024 + 1)).status_code == 413
    wrong = rig.post(0, "drift", drift_bytes(0, 2, device=device, reference="ef" * 32))
    assert wrong.status_code == 422
    assert "not the one signed" in wrong.json()["error"]["message"]
    spoofed = rig.post(0, "drift", drift_bytes(0, 3, device=rig.devices[1][0]))
    assert spoofed.status_code == 422
    assert len(rig.fleet.services.store.drift_windows(MODEL)) == 1


def test_captures_are_stored_once_and_listed_for_operators(rig: Rig) -> None:
    window = int(T0.timestamp())
    params = {"model": MODEL, "release": 1, "window_start": window}
    first = rig.post(0, "captures", npz(), **params)
    assert first.status_code == 201, first.text
    assert (first.json()["rows"], first.json()["labelled"]) == (5, 3)
    assert rig.post(0, "captures", npz(), **params).status_code == 200
    sha = first.json()["artifact_sha256"]
    assert rig.fleet.services.artifacts.exists(sha)
    ops = {"Authorization": f"Bearer {rig.operator}"}
    listed = rig.client.get(f"/v1/models/{MODEL}/captures", headers=ops)
    assert listed.status_code == 200, listed.text
    assert [c["artifact_sha256"] for c in listed.json()] == [sha]
    later = rig.client.get(
        f"/v1/models/{MODEL}/captures", headers=ops, params={"since": "2030-01-01T00:00:00Z"}
    )
    assert later.json() == []
    assert rig.client.get(f"/v1/models/{MODEL}/captures").status_code == 401
    device_token = {"Authorization": f"Bearer {rig.devices[0][1]}"}
    assert rig.client.get(f"/v1/models/{MODEL}/captures", headers=device_token).status_code == 401


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not a zip", "not a readable .npz"),
        (npz(x=np.ones((5, 3), dtype=np.float64)), "x must be float32"),
        (npz(y=np.zeros(4, dtype=np.int64)), "y must be int64"),
        (npz(y=np.full(5, -2, dtype=np.int64)), "label indexes"),
        (npz(time=np.array(["a"] * 5, dtype=object)), "readable"),
    ],
)
def test_bad_captures_are_refused(rig: Rig, body: bytes, message: str) -> None:
    params = {"model": MODEL, "release": 1, "window_start": 60}
    answer = rig.post(0, "captures", body, **params)
    assert answer.status_code == 422
    assert message in answer.json()["error"]["message"]


def test_metrics_need_a_token_and_count_ingestion(rig: Rig) -> None:
    device, _ = rig.devices[0]
    rig.post(0, "drift", drift_bytes(0, 1, device=device))
    rig.post(0, "drift", b"EFDS garbage")
    assert rig.client.get("/metrics").status_code == 401
    answer = rig.client.get("/metrics", headers={"Authorization": f"Bearer {rig.operator}"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert 'edgefleet_ingest_stored_total{channel="drift"' in text
    assert 'reason="malformed"' in text
    assert "edgefleet_rollouts" in text
    assert "edgefleet_status_reports" in text


def test_metrics_may_be_public(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, metrics={"public": True})
    with TestClient(create_app(fleet.services.settings, services=fleet.services)) as client:
        assert client.get("/metrics").status_code == 200
