"""``fleetctl rollout`` and ``fleetctl apply`` against a real control plane.

The devices enroll over HTTP with their own keys and report over HTTP with
their own tokens, as HTTP-only agents do; the control plane's driver runs the
rollouts. Every command is the real ``fleetctl`` process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetcore import canonical
from fleetcore.protocol import Installed, UpdateState
from models.tiny import tiny_onnx_bytes
from tests.e2e.conftest import Server, running_server
from tests.e2e.test_devices import Device, enroll, status, wait_for

ROLLOUT = """\
apiVersion: edgefleet/v1
kind: Rollout
metadata: {{name: {name}}}
spec:
  model: tiny
  version: "{version}"
  selector: "site in (a,b)"
  stratify_by: site
  waves: [{{percent: 25, min_devices: 2}}, {{percent: 100, approval: true}}]
  device_timeout: 10m
  on_failure: revert_all
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A control plane whose driver ticks every 0.2 s (SQLite; replicas: test_rollouts.py)."""
    env = {"EDGEFLEET_ROLLOUT_TICK_S": "0.2"}
    with running_server("sqlite", tmp_path_factory.mktemp("control-plane"), env) as started:
        yield started


class Fleet:
    """HTTP-only devices that report what the control plane assigns them."""

    def __init__(self, server: Server, devices: list[Device]) -> None:
        self.server, self.devices = server, devices
        self.seq = dict.fromkeys((d.id for d in devices), 0)
        self.installed: dict[str, Installed] = {}

    def report(self, device: Device, state: UpdateState, **fields: Any) -> None:
        self.seq[device.id] += 1
        body = status(device.id, self.seq[device.id], state, **fields)
        with device.http(self.server) as client:
            answer = client.post(
                f"/v1/devices/{device.id}/reports",
                content=canonical.encode({"reports": [json.loads(body)]}),
            )
            assert answer.status_code == 200, answer.text

    def act(self, fail: frozenset[str] = frozenset()) -> int:
        """Each device with a new assignment commits it (or fails it); return how many acted."""
        acted = 0
        # Failing devices report last, so a wave's successes are stored before its failure
        # can fail the gate early (and revert the wave before the others have reported).
        for device in sorted(self.devices, key=lambda d: d.id in fail):
            with self.server.admin as client:
                found = client.get(f"/v1/devices/{device.id}").json()
            assignment = found["assignment"]
            if not assignment or found["state_sequence"] == assignment["sequence"]:
                continue
            target = Installed("tiny", assignment["release"], assignment["artifact_sha256"])
            before = self.installed.get(device.id)
            sequence = assignment["sequence"]
            if device.id in fail:
                self.report(device, UpdateState.FAILED, target=target, active=before,
                            assignment_sequence=sequence, reason="smoke")  # fmt: skip
            else:
                self.report(device, UpdateState.COMMITTED, target=target, active=target,
                            previous=before, assignment_sequence=sequence)  # fmt: skip
                self.installed[device.id] = target
            acted += 1
        return acted


def release(server: Server, version: str, seed: int) -> int:
    with server.admin as client:
        uploaded = client.post(
            "/v1/artifacts", params={"kind": "onnx"}, content=tiny_onnx_bytes(seed)
        )
        sha = uploaded.json()["sha256"]
        made = client.post("/v1/models/tiny/versions", json={"version": version,
                                                             "artifact_sha256": sha})  # fmt: skip
        assert made.status_code == 201, made.text
    done = server.cli("release", "create", f"tiny@{version}", "-o", "json")
    counter: int = json.loads(done.stdout)["counter"]
    return counter


def rollout(server: Server, ref: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(server.cli("rollout", "status", ref, "-o", "json").stdout)
    return found


def drive(fleet: Fleet, ref: str, until: str, fail: frozenset[str] = frozenset()) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        fleet.act(fail)
        found = rollout(fleet.server, ref)
        return found if found["phase"] == until else None

    return wait_for(reached, f"rollout {ref} {until}", timeout_s=60)


@pytest.fixture(scope="module")
def fleet(server: Server) -> Fleet:
    devices = [enroll(server, {"site": "ab"[i % 2]}) for i in range(8)]
    devices.append(enroll(server, {"site": "c"}))  # outside the selector
    return Fleet(server, devices)


def test_plan_create_apply_watch_and_approve(server: Server, fleet: Fleet, tmp_path: Path) -> None:
    release(server, "1", seed=0)
    gitops = tmp_path / "rollouts"
    gitops.mkdir()
    (gitops / "tiny-1.yaml").write_text(ROLLOUT.format(name="tiny-1", version="1"))
    (gitops / "notes.yaml").write_text("kind: Something\nmetadata: {name: x}\n")

    plan = server.cli("rollout", "plan", "-f", gitops / "tiny-1.yaml")
    assert "tiny release 1: 8 device(s) in 2 waves [2, 6]" in plan.stdout
    first = server.cli("apply", "-f", gitops)
    assert first.stdout.startswith("rollout/tiny-1 created (ro-")
    again = server.cli("apply", "-f", gitops, "-o", "json")
    (applied,) = json.loads(again.stdout)
    assert applied["result"] == "unchanged" and applied["rollout"]["name"] == "tiny-1"

    waiting = drive(fleet, "tiny-1", "awaiting_approval")
    assert waiting["by_wave"][0]["counts"] == {"committed": 2}
    targets = json.loads(server.cli("rollout", "devices", "tiny-1", "-o", "json").stdout)
    assert len(targets) == 8 and {t["device_id"] for t in targets} == {
        d.id for d in fleet.devices[:8]
    }
    # Both sites are in the first wave (stratified); the site-c device never is.
    first_wave = {t["device_id"] for t in targets if t["wave"] == 0}
    assert {d.id for d in fleet.devices[:8] if d.id in first_wave} and len(first_wave) == 2

    promoted = server.cli("rollout", "promote", "tiny-1")
    assert "tiny-1" in promoted.stdout and "progressing, wave 2/2" in promoted.stdout
    drive(fleet, "tiny-1", "completed")  # the devices report what the driver assigns them
    watched = server.cli("rollout", "status", "tiny-1", "--watch", "--interval", "0.2")
    assert watched.returncode == 0
    assert watched.stdout.strip().splitlines()[-1].endswith("completed, wave 2/2; 8 committed")


def test_a_failing_wave_reverts_and_rollback_and_revoke_report_devices(
    server: Server, fleet: Fleet, tmp_path: Path
) -> None:
    counter = release(server, "2", seed=1)
    document = tmp_path / "tiny-2.yaml"
    document.write_text(ROLLOUT.format(name="tiny-2", version="2"))
    created = json.loads(server.cli("rollout", "create", "-f", document, "-o", "json").stdout)
    first_wave = [t["device_id"] for t in json.loads(
        server.cli("rollout", "devices", "tiny-2", "--wave", "1", "-o", "json").stdout
    )]  # fmt: skip
    assert len(first_wave) == 2

    failed = drive(fleet, created["rollout"]["id"], "failed", fail=frozenset(first_wave[:1]))
    fleet.act()  # the devices take their revert assignments
    assert failed["reason"] == "install gate failed"
    devices = json.loads(server.cli("rollout", "devices", "tiny-2", "-o", "json").stdout)
    by_status: dict[str, int] = {}
    for target in devices:
        by_status[target["status"]] = by_status.get(target["status"], 0) + 1
    assert by_status == {"rolled_back": 2, "cancelled": 6}
    reverted = next(t for t in devices if t["device_id"] == first_wave[0])
    assert "was failed: smoke" in reverted["reason"]

    watch = server.cli("rollout", "status", "tiny-2", "--watch", check=False)
    assert watch.returncode == 1  # a rollout that did not complete
    refused = server.cli("rollout", "resume", "tiny-2", check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "error: [invalid_state] cannot resume a rollout that is failed"
    )
    audit = json.loads(server.cli("audit", "--type", "rollout", "-o", "json").stdout)
    failure = next(e for e in audit if e["action"] == "wave.failed")
    assert failure["change"]["gates"][0]["values"]["failed"] == 1

    # The first release's rollout rolls back; then that release is revoked.
    back = server.cli("rollout", "rollback", "tiny-1", "--reason", "drill")
    assert "rolled_back" in back.stdout  # nobody ran an earlier release: no_previous
    targets = json.loads(server.cli("rollout", "devices", "tiny-1", "-o", "json").stdout)
    assert {t["status"] for t in targets} == {"no_previous"}
    revoked = json.loads(
        server.cli("release", "revoke", "tiny@1", "--reason", "drill", "-o", "json").stdout
    )
    moved = revoked["devices"]
    # Every device desiring release 1 was handled: the one that had committed release 2
    # before its revert goes back to 2, the others never ran another release.
    assert moved["reverted"] == 1 and moved["not_reverted_count"] == 7
    assert {n["reason"] for n in moved["not_reverted"]} == {"it ran no other release of tiny"}
    with server.admin as client:
        again = client.post("/v1/devices/" + fleet.devices[0].id + "/assignment",
                            json={"model": "tiny", "release": 1})  # fmt: skip
    assert again.status_code == 409 and "revoked" in again.json()["error"]["message"]
    bad = server.cli("rollout", "create", "-f", document, check=False)
    assert bad.returncode == 1 and "already exists" in bad.stderr
    assert counter == 2


def test_bad_documents_fail_in_one_line(server: Server, tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text(ROLLOUT.format(name="typo", version="1").replace("device_timeout", "timeout"))
    done = server.cli("rollout", "plan", "-f", typo, check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: [invalid_input] spec: unknown field(s) timeout"
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    done = server.cli("apply", "-f", broken, check=False)
    assert done.returncode != 0 and "not valid YAML" in done.stderr
    flags = server.cli("rollout", "plan", "--name", "x", "--release", "tiny@9", check=False)
    assert flags.returncode == 1 and "not_found" in flags.stderr
