"""Fleet drift end to end: summaries posted by devices, ``fleetctl drift report``, the monitor.

A real control plane (uvicorn, SQLite and PostgreSQL) registers the tiny
ONNX classifier with reference data, so its release signs a drift
reference. Devices enroll over HTTP with ``site`` labels and post drift
summaries made the way an agent makes them (a ``DriftAccumulator`` over that
reference, fed inputs and the model's own outputs): the north devices from
the reference distribution, the south ones with one feature shifted by half
a standard deviation. The operator's ``fleetctl drift report`` must see the
south cohort drift and the north one not; with a drift policy applied by
``fleetctl apply``, the server's monitor must call the policy's webhook once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import yaml

from fleetcore.drift import DriftReference
from fleetcore.drift.encoding import encode
from fleetcore.drift.summary import DriftAccumulator, DriftSummary, WindowKey
from models.tiny import tiny_onnx_bytes
from tests.e2e.conftest import Server, running_server
from tests.e2e.test_devices import Device, enroll
from tests.unit.control_plane.retraining.support import Receiver, receiver

WINDOW_S = 60
WINDOWS = 6
PER_WINDOW = 150
SHIFT = {1: 0.5}  # feature f1, half a reference standard deviation
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_WEIGHTS = np.random.default_rng(0).standard_normal((4, 3))  # models.tiny's, seed 0


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One-minute drift buckets, and a monitor that checks every second."""
    env = {
        "EDGEFLEET_MQTT__EMBEDDED": "false",
        "EDGEFLEET_DRIFT__BUCKET_S": str(WINDOW_S),
        "EDGEFLEET_DRIFT__CHECK_INTERVAL_S": "1",
    }
    with running_server(request.param, tmp_path_factory.mktemp("control-plane"), env) as started:
        yield started


def _probabilities(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    z = x @ _WEIGHTS
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def _register(server: Server, model: str, tmp: Path) -> DriftReference:
    """Push the tiny model with reference data, release it, and fetch its signed reference."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4000, 4))
    p = _probabilities(x)
    y = (rng.random(len(x))[:, None] > np.cumsum(p, axis=1)).sum(axis=1).clip(0, 2)
    data = tmp / f"{model}-reference.npz"
    np.savez(data, x=x.astype(np.float32), y=y.astype(np.int64))
    onnx = tmp / f"{model}.onnx"
    onnx.write_bytes(tiny_onnx_bytes())
    pushed = server.cli(
        "model", "push", onnx, "--name", model, "--version", "1", "--reference-data", data,
        "-o", "json",
    )  # fmt: skip
    version = json.loads(pushed.stdout)
    assert version["state"] == "validated", version
    server.cli("release", "create", f"{model}@1")
    with server.admin as client:
        answer = client.get(f"/v1/artifacts/{version['drift_reference_sha256']}")
        assert answer.status_code == 200, answer.text
    return DriftReference.from_bytes(answer.content)


def _post_windows(
    server: Server,
    device: Device,
    model: str,
    reference: DriftReference,
    *,
    first: int,
    seed: int,
    shift: dict[int, float] | None = None,
) -> None:
    """``WINDOWS`` one-minute summaries from ``first`` on, posted as a device does."""
    rng = np.random.default_rng(seed)
    accumulator = DriftAccumulator(reference)
    with device.http(server) as client:
        for k in range(WINDOWS):
            x = rng.standard_normal((PER_WINDOW, 4))
            for column, sd in (shift or {}).items():
                x[:, column] += sd
            accumulator.update(x.astype(np.float32), _probabilities(x))
            key = WindowKey(
                device=device.id,
                model=model,
                release=1,
                reference=reference.digest(),
                start=first + k * WINDOW_S,
                length=WINDOW_S,
                seq=k + 1,
            )
            answer = client.post(
                f"/v1/devices/{device.id}/drift",
                content=encode(DriftSummary(key, accumulator.take())),
                headers={"Content-Type": "application/octet-stream"},
            )
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"accepted": 1, "duplicates": 0}


def _fleet(server: Server, model: str, tmp: Path, *, seed: int) -> list[Device]:
    """Two north devices on the reference distribution, two south ones shifted."""
    reference = _register(server, model, tmp)
    # The same minutes for every device, ending at the last full minute.
    first = (int(time.time()) // WINDOW_S - WINDOWS) * WINDOW_S
    devices = []
    for i, site in enumerate(["north", "north", "south", "south"]):
        device = enroll(server, labels={"site": site})
        _post_windows(
            server, device, model, reference, first=first, seed=seed + i,
            shift=SHIFT if site == "south" else None,
        )  # fmt: skip
        devices.append(device)
    return devices


def _section(text: str, cohort: str) -> str:
    """The table section of one cohort in ``fleetctl drift report`` output."""
    parts = text.split("\n\n")
    (found,) = [p for p in parts if f"cohort {cohort}" in p]
    return found


def test_drift_report_shows_the_shifted_cohort(server: Server, tmp_path: Path) -> None:
    model = "drift-report"
    _fleet(server, model, tmp_path, seed=10)

    table = server.cli("drift", "report", model, "--cohort", "site").stdout
    south, north = _section(table, "site=south"), _section(table, "site=north")
    assert "[bold" not in table  # styles, never markup printed as text
    assert "ALARM: f1 drifted in 4 of the last 4 windows" in south
    assert "DRIFT" in south and "2 of 2 devices drift (100% of traffic)" in south
    assert "accuracy:" in south and "estimated without labels" in south
    assert "ALARM" not in north and "DRIFT" not in north
    assert "no persistent drift" in north

    found = json.loads(
        server.cli("drift", "report", model, "--cohort", "site", "-o", "json").stdout
    )
    assert found["model"] == model
    assert found["settings"] == {"bucket_s": WINDOW_S, "min_samples": 80, "persistence": "3 of 4"}
    by_site = {s["cohort"]["value"]: s for s in found["sections"]}
    assert set(by_site) == {"north", "south"}
    assert by_site["south"]["alarm"] and by_site["south"]["persistent_features"] == ["f1"]
    assert not by_site["north"]["alarm"]
    assert by_site["south"]["features"][0]["name"] == "f1"
    assert len(by_site["south"]["windows"]) == WINDOWS
    assert by_site["south"]["samples"] == 2 * 4 * PER_WINDOW
    assert by_site["south"]["accuracy"]["method"] == "cbpe"

    # The same report straight from the API, and with --since / --release.
    with server.admin as client:
        api = client.get(f"/v1/models/{model}/drift", params={"cohort": "site"}).json()
    assert [s["cohort"] for s in api["sections"]] == [s["cohort"] for s in found["sections"]]
    recent = json.loads(
        server.cli("drift", "report", model, "--since", "3m ago", "--release", "1",
                   "-o", "json").stdout
    )  # fmt: skip
    (fleet,) = recent["sections"]
    assert 1 <= len(fleet["windows"]) <= 3

    png = tmp_path / "drift.png"
    plotted = server.cli("drift", "report", model, "--cohort", "site", "--png", png).stdout
    assert f"plot written to {png}" in plotted
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000

    north_only = json.loads(
        server.cli("drift", "report", model, "--cohort", "site=north", "-o", "json").stdout
    )
    assert [s["cohort"] for s in north_only["sections"]] == [{"label": "site", "value": "north"}]


def test_drift_report_errors_are_one_line(server: Server) -> None:
    bad = server.cli("drift", "report", "drift-report", "--cohort", "=north", check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0 and "give a label" in bad.stderr

    missing = server.cli("drift", "report", "no-such-model", check=False)
    assert missing.returncode == 1
    assert "not_found" in missing.stderr and missing.stderr.strip().count("\n") == 0

    with server.admin as client:
        refused = client.get("/v1/models/drift-report/drift", params={"cohort": "site="})
    assert refused.status_code == 422, refused.text


def _policy(model: str, url: str) -> dict[str, Any]:
    return {
        "apiVersion": "edgefleet/v1",
        "kind": "DriftPolicy",
        "metadata": {"name": f"{model}-policy"},
        "spec": {
            "model": model,
            "cohort": "site",
            "breadth": {"min_share_devices": 0.5},
            "persistence": {"windows": 3, "of": 4},
            "cooldown": "6h",
            "actions": [{"type": "webhook", "url": f"{url}/retrain", "backoff": "100ms"}],
        },
    }


def _wait_for(received: Receiver, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(received.requests) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(received.requests) >= count, received.requests


def test_the_monitor_fires_the_policy_once(server: Server, tmp_path: Path) -> None:
    model = "drift-monitored"
    with receiver() as received:
        file = tmp_path / "policy.yaml"
        file.write_text(yaml.safe_dump(_policy(model, received.url)))
        assert f"driftpolicy/{model}-policy created" in server.cli("apply", "-f", file).stdout
        _fleet(server, model, tmp_path, seed=20)

        _wait_for(received, 1)
        time.sleep(5)  # five more checks: the idempotency key and the cooldown keep it at one
        assert len(received.requests) == 1, [r.body for r in received.requests]

    (seen,) = received.requests
    assert seen.path == "/retrain"
    assert seen.headers["idempotency-key"] == seen.body["idempotency_key"]
    document = seen.body
    assert document["kind"] == "DriftTrigger" and document["policy"] == f"{model}-policy"
    evidence = document["evidence"]
    assert evidence["model"] == model and evidence["release"] == 1
    assert evidence["cohort"] == "site=south"
    assert [f["name"] for f in evidence["drifted_features"]] == ["f1"]
    assert evidence["drifted_features"][0]["q_value"] < 0.01
    assert evidence["share_devices"] == 1.0
    assert evidence["windows_drifted"] >= 3
    low, high = evidence["accuracy_interval"]
    assert low <= evidence["estimated_accuracy"] <= high

    triggers = json.loads(
        server.cli("retraining", "triggers", "--policy", f"{model}-policy", "-o", "json").stdout
    )
    assert len(triggers) == 1 and triggers[0]["cohort"] == "site=south"
