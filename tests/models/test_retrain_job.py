"""The retraining job against a real control plane, run as the loop runs it (a subprocess).

A device enrolls and uploads its captures over HTTP; the job downloads them,
retrains, pushes, releases and starts the canary rollout. Needs the capture
routes (``POST /v1/devices/{d}/captures``, ``GET /v1/models/{m}/captures``).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from models.sensor import recipe
from models.sensor.data import generate

pytest.importorskip("fastapi")
pytest.importorskip("onnxruntime")

from tests.e2e.conftest import Server, running_server
from tests.e2e.test_devices import Device, enroll

pytestmark = pytest.mark.timeout(600)


@dataclass
class Fleet:
    server: Server
    device: Device
    work: Path
    build: Path

    def release(self, model: str) -> None:
        """Push the pipeline's model as ``model@1.0.0`` and release it (counter 1)."""
        b = self.build
        self.server.cli(
            "model", "push", b / "sensor-float.onnx", "--name", model, "--version", "1.0.0",
            "--quantize", "int8", "--calibration-data", b / "calibration.npz",
            "--eval-data", b / "eval.npz", "--reference-data", b / "reference.npz",
        )  # fmt: skip
        self.server.cli("release", "create", f"{model}@1.0.0")

    def run(self, *args: str, evidence: dict[str, Any] | None = None) -> tuple[int, str, str]:
        env = {
            **self.server.env,
            "EDGEFLEET_SERVER": self.server.url,
            "EDGEFLEET_TOKEN": self.server.admin_token,
        }
        env.pop("EDGEFLEET_DRIFT_EVIDENCE", None)
        if evidence is not None:
            path = self.work / f"evidence-{len(list(self.work.glob('evidence-*')))}.json"
            path.write_text(json.dumps(evidence))
            env["EDGEFLEET_DRIFT_EVIDENCE"] = str(path)
        done = subprocess.run(
            [sys.executable, "-m", "models.sensor.retrain", "--quick", *args],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        return done.returncode, done.stdout, done.stderr

    def versions(self, model: str) -> list[str]:
        with self.server.admin as client:
            return [v["version"] for v in client.get(f"/v1/models/{model}/versions").json()]

    def upload(self, model: str, x: Any, y: Any, windows_ago: int) -> None:
        """One capture of ``model`` release 1, ``windows_ago`` minutes before now."""
        window_start = (int(time.time()) // 60 - windows_ago) * 60
        buffer = io.BytesIO()
        times = np.full(len(y), window_start, np.int64)
        np.savez(buffer, x=x.astype(np.float32), y=y.astype(np.int64), time=times)
        params: dict[str, str | int] = {"model": model, "release": 1, "window_start": window_start}
        with self.device.http(self.server) as client:
            response = client.post(
                f"/v1/devices/{self.device.id}/captures", params=params,
                content=buffer.getvalue(), headers={"Content-Type": "application/octet-stream"},
            )  # fmt: skip
        assert response.status_code in (200, 201), response.text


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    from models.sensor import pipeline

    work = tmp_path_factory.mktemp("retrain")
    build = work / "sensor"
    # The default recipe: the model the demo ships, which the job must improve on.
    pipeline.run(build, export_data=True, tflite_model=None, console=Console(file=io.StringIO()))
    env = {"EDGEFLEET_MQTT__EMBEDDED": "false"}  # HTTP only: no broker port to share
    with running_server("sqlite", work / "control-plane", env) as server:
        with server.admin as client:
            paths = client.get("/openapi.json").json()["paths"]
        if "/v1/models/{name}/captures" not in paths and "/v1/models/{model}/captures" not in paths:
            pytest.skip("this control plane has no capture routes yet")
        yield Fleet(server, enroll(server, labels={"site": "plant-a"}), work, build)


def _result(stdout: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return found


def test_no_captures_is_exit_2_and_pushes_nothing(fleet: Fleet) -> None:
    fleet.release("sensor-empty")
    code, _, err = fleet.run("--model", "sensor-empty", "--since", "2099-01-01T00:00:00Z")
    assert code == 2, err
    assert err == "error: no captured data since 2099-01-01T00:00:00+00:00: nothing to retrain on\n"
    assert fleet.versions("sensor-empty") == ["1.0.0-float", "1.0.0"]


def test_captures_that_would_cost_the_original_data_are_rejected(fleet: Fleet) -> None:
    """Labels that contradict the original data: no gain is worth that; exit 3, nothing pushed."""
    fleet.release("sensor-wrong")
    x, y = generate(1500, seed=41)
    fleet.upload("sensor-wrong", x, (y + 1) % 4, windows_ago=1)
    code, out, err = fleet.run("--model", "sensor-wrong", "--since", "2000-01-01T00:00:00Z")
    assert code == 3, err
    result = _result(out)
    assert result["outcome"] == "rejected" and result["version"] is None
    assert any("original holdout" in r for r in result["metrics"]["reasons"])
    assert "drifted (" in out and "rejected" in err
    assert fleet.versions("sensor-wrong") == ["1.0.0-float", "1.0.0"]


def test_drifted_captures_become_a_release_and_a_canary_rollout(fleet: Fleet) -> None:
    model = "sensor-drift"
    fleet.release(model)
    for k in range(3):  # three windows of drifted data, two thirds labelled
        x, y = generate(800, seed=50 + k, drift=recipe.DEMO_DRIFT)
        fleet.upload(model, x, np.where(np.arange(800) % 3 == 0, -1, y), windows_ago=k + 1)
    evidence = {"model": model, "release": 1, "cohort": "site=plant-a",
                "window_start": "2000-01-01T00:00:00Z"}  # fmt: skip
    code, out, err = fleet.run("--out", str(fleet.work / "job"), evidence=evidence)
    assert code == 0, err + out
    result = _result(out)
    assert result["outcome"] == "accepted" and result["captures"] == 3 and result["devices"] == 1
    assert "3 captures from 1 device(s)" in out and "2400 rows, 1599 labelled" in out
    assert result["version"] == "1.1.0" and result["release"] == 2
    assert result["rollout"] == f"{model}-1.1.0-retrain" and result["selector"] == "site=plant-a"
    metrics = result["metrics"]
    assert metrics["new_drifted"] > metrics["current_drifted"] + 0.1
    assert metrics["new_original"] >= metrics["current_original"] - 0.01
    for step in ("[1/9] current", "[2/9] captures", "[6/9] validate", "[9/9] rollout"):
        assert step in out
    with fleet.server.admin as client:
        version = client.get(f"/v1/models/{model}/versions/1.1.0").json()
        rollout = client.get(f"/v1/rollouts/{result['rollout_id']}").json()
    assert version["state"] == "released" and version["drift_reference_sha256"]
    assert version["provenance"]["data_source"] == "captures"
    assert version["parent_version"] == "1.1.0-float"
    spec = rollout["spec"]["spec"]  # the normalised rollout document
    assert [w.get("approval", False) for w in spec["waves"]] == [False, True]
    assert spec["selector"] == "site=plant-a" and spec["waves"][0]["percent"] == 10
    assert (fleet.work / "job" / "retrain.json").exists()


def test_simulated_drift_without_captures_releases_with_an_offline_key(fleet: Fleet) -> None:
    model = "sensor-sim"
    fleet.release(model)
    key = sorted((fleet.server.data_dir / "trust" / "keys").glob("release-*.key"))[0]
    evidence = {"model": model, "simulated_drift": {"mean_shift": 1.0, "scale": 1.3}}
    code, out, err = fleet.run(
        "--release-key", str(key), "--no-approval", "--selector", "site=nowhere",
        evidence=evidence,
    )  # fmt: skip
    assert code == 0, err + out
    result = _result(out)
    assert result["source"] == "simulated" and result["release_state"] == "released"
    assert result["rollout"] is None  # no device matches: the release stands, no rollout
    assert "signed by the release key here" in out and "none created" in out
