"""Retraining triggers end to end: ``fleetctl apply`` a DriftPolicy, hand the server evidence,
and see its worker POST the trigger to a real local receiver; manual fire from the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import Server, running_server
from tests.unit.control_plane.retraining.support import Receiver, evidence, receiver


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The control plane; no MQTT broker (retraining needs none, and tests share the host)."""
    data = tmp_path_factory.mktemp("control-plane")
    with running_server(request.param, data, {"EDGEFLEET_MQTT__EMBEDDED": "false"}) as started:
        yield started


def _policy(url: str) -> dict[str, object]:
    return {
        "apiVersion": "edgefleet/v1",
        "kind": "DriftPolicy",
        "metadata": {"name": "sensor-drift"},
        "spec": {
            "model": "sensor",
            "breadth": {"min_share_traffic": 0.3},
            "persistence": {"windows": 3, "of": 4},
            "min_accuracy_drop": 2,
            "cooldown": "6h",
            "actions": [{"type": "airflow", "base_url": url, "dag_id": "retrain_sensor",
                         "backoff": "100ms", "max_backoff": "200ms"}],
        },
    }  # fmt: skip


def _wait_for(received: Receiver, count: int) -> None:
    deadline = time.monotonic() + 30
    while len(received.requests) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(received.requests) >= count, received.requests


def _wait_status(server: Server, policy: str, status: str) -> list[dict[str, object]]:
    deadline = time.monotonic() + 30
    while True:
        found = json.loads(
            server.cli("retraining", "triggers", "--policy", policy, "-o", "json").stdout
        )
        if (found and found[0]["status"] == status) or time.monotonic() > deadline:
            assert found and found[0]["status"] == status, found
            return list(found)
        time.sleep(0.2)


def test_policy_apply_evidence_and_manual_fire(server: Server, tmp_path: Path) -> None:
    with receiver([503]) as received:
        file = tmp_path / "policy.yaml"
        file.write_text(yaml.safe_dump(_policy(received.url)))
        assert "driftpolicy/sensor-drift created" in server.cli("apply", "-f", file).stdout
        assert "driftpolicy/sensor-drift unchanged" in server.cli("apply", "-f", file).stdout
        listed = json.loads(server.cli("retraining", "policies", "-o", "json").stdout)
        assert [p["name"] for p in listed] == ["sensor-drift"]

        viewer = server.token("retraining-viewer", "viewer")
        refused = server.http(viewer).put(
            "/v1/retraining/policies/sensor-drift", json=_policy(received.url)
        )
        assert refused.status_code == 403

        # Evidence too narrow: skipped with its reason, nothing sent.
        narrow = evidence(share_traffic=0.1).to_dict()
        answer = server.admin.post("/v1/retraining/evidence", json={"evidence": narrow})
        assert answer.status_code == 202, answer.text
        assert answer.json()["reason"] == "not_broad_enough"

        body = {"evidence": evidence().to_dict()}
        fired = server.admin.post("/v1/retraining/evidence", json=body).json()
        assert fired["fired"], fired
        key = fired["outcomes"][0]["idempotency_key"]
        again = server.admin.post("/v1/retraining/evidence", json=body).json()
        assert again["reason"] == "already_fired"

        _wait_for(received, 2)  # a 503, then the retry
        (trigger,) = _wait_status(server, "sensor-drift", "succeeded")
        assert trigger["attempts"] == 2 and trigger["idempotency_key"] == key
        seen = received.requests[-1]
        assert seen.path == "/api/v1/dags/retrain_sensor/dagRuns"
        assert seen.body["dag_run_id"] == key
        assert seen.body["conf"]["evidence"]["share_traffic"] == 0.6

        evidence_file = tmp_path / "evidence.json"
        evidence_file.write_text(json.dumps(evidence().to_dict()))
        manual = server.cli(
            "retraining", "fire", "sensor-drift", "--evidence", evidence_file, "--key", "wiring-1"
        )
        assert "fired sensor-drift" in manual.stdout
        _wait_for(received, 3)
        assert received.requests[-1].body["dag_run_id"] == "wiring-1"
        assert received.requests[-1].body["conf"]["manual"] is True

        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({**evidence().to_dict(), "colour": "red"}))
        failed = server.cli("retraining", "fire", "sensor-drift", "--evidence", bad, check=False)
        assert failed.returncode == 1 and "unknown field(s) colour" in failed.stderr

    audit = server.admin.get("/v1/audit", params={"object_type": "retraining_trigger"})
    assert audit.status_code == 200, audit.text
    assert {e["action"] for e in audit.json()} == {"retraining.attempt", "retraining.trigger"}
