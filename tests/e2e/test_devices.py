"""Devices end to end: a real control plane, a real Mosquitto, real paho clients as devices.

Every device here enrolls over HTTP with its own Ed25519 key, exactly as
docs/protocol.md describes; MQTT clients authenticate with the credential
the enrollment returned, so the broker's ACL and password file are the ones
the control plane maintains. With SQLite the control plane speaks MQTT 5
(shared subscriptions), with PostgreSQL MQTT 3.1.1 (``fleet_server``).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import httpx
import pytest

from fleetcore import canonical
from fleetcore.envelope import pae, payload_type
from fleetcore.keys import PrivateKey
from fleetcore.protocol import Channel, DesiredState, Presence, StatusReport, UpdateState, topic
from fleetcore.trust import TrustedSet
from models.tiny import tiny_onnx_bytes
from tests.e2e.conftest import FleetServer, Server
from tests.support.mosquitto import Probe

T = TypeVar("T")
CAPABILITIES: dict[str, Any] = {
    "runtimes": {"onnxruntime": "1.20.1"},
    "formats": ["onnx"],
    "onnx_opsets": [7, 21],
    "arch": "aarch64",
    "ram_bytes": 4 << 30,
    "disk_free_bytes": 16 << 30,
    "agent_version": "0.1.0",
}
NOW = "2026-11-22T10:00:00Z"


@dataclass
class Device:
    id: str
    token: str
    answer: dict[str, Any]
    key: PrivateKey

    @property
    def mqtt_password(self) -> str:
        password: str = self.answer["mqtt"]["password"]
        return password

    @property
    def root(self) -> bytes:
        return json.dumps(self.answer["root"]).encode()

    def http(self, server: Server) -> httpx.Client:
        return server.http(self.token)


@dataclass(frozen=True)
class Release:
    model: str
    version: str
    counter: int
    sha256: str


def wait_for(check: Callable[[], T | None], what: str, timeout_s: float = 20.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def enrollment_body(
    key: PrivateKey,
    *,
    labels: dict[str, str] | None = None,
    capabilities: dict[str, Any] | None = None,
    signer: PrivateKey | None = None,
) -> bytes:
    signed = {
        "_type": "enrollment",
        "public_key": key.public_key.to_dict(),
        "capabilities": CAPABILITIES if capabilities is None else capabilities,
        "labels": labels or {},
        "hostname": "pi-17",
        "time": NOW,
    }
    by = signer or key
    sig = by.sign(pae(payload_type("enrollment"), canonical.encode(signed))).hex()
    return canonical.encode({"signed": signed, "signatures": [{"keyid": key.keyid, "sig": sig}]})


def enroll_token(server: Server, labels: dict[str, str] | None = None, uses: int = 1) -> str:
    with server.admin as client:
        response = client.post("/v1/enroll-tokens", json={"labels": labels or {}, "max_uses": uses})
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token


def post_enrollment(server: Server, token: str, body: bytes) -> httpx.Response:
    with server.http(token) as client:
        return client.post("/v1/enroll", content=body)


def enroll(
    server: Server, labels: dict[str, str] | None = None, capabilities: dict[str, Any] | None = None
) -> Device:
    key = PrivateKey.generate()
    response = post_enrollment(
        server, enroll_token(server), enrollment_body(key, labels=labels, capabilities=capabilities)
    )
    assert response.status_code == 201, response.text
    answer = response.json()
    return Device(answer["device_id"], answer["device_token"], answer, key)


def device_info(server: Server, device_id: str) -> dict[str, Any]:
    with server.admin as client:
        response = client.get(f"/v1/devices/{device_id}")
        assert response.status_code == 200, response.text
        info: dict[str, Any] = response.json()
        return info


def assign(server: Server, device_id: str, release: Release) -> dict[str, Any]:
    done = server.cli(
        "device", "assign", device_id, f"{release.model}@{release.version}", "-o", "json"
    )
    signed: dict[str, Any] = json.loads(done.stdout)
    return signed


def status(device: str, seq: int, state: UpdateState = UpdateState.IDLE, **fields: Any) -> bytes:
    when = datetime(2026, 11, 22, 10, 0, seq % 60, tzinfo=timezone.utc)
    return StatusReport(device, seq, when, state, **fields).encode()


def connect(fleet: FleetServer, device: Device, **options: Any) -> Probe:
    probe = fleet.broker.probe(device.id, device.mqtt_password, protocol=fleet.protocol, **options)
    assert probe.connect() == "Success"
    return probe


def observer(fleet: FleetServer, watched: str = "edgefleet/v1/#") -> Probe:
    """A client with the control plane's credential watching device topics."""
    probe = fleet.broker.probe("control-plane", fleet.mqtt_password)
    assert probe.connect() == "Success"
    assert probe.subscribe(watched) == ["Granted QoS 1"]
    return probe


def verify(document: bytes, device: Device) -> int:
    desired = DesiredState.decode(document)
    trusted = TrustedSet(device.root, device_id=device.id)
    now = datetime.now(timezone.utc)
    release = trusted.verify_release(desired.manifest, now)
    return trusted.verify_assignment(desired.assignment, release, now).sequence


@pytest.fixture(scope="module")
def release(fleet_server: FleetServer) -> Release:
    server = fleet_server.server
    with server.admin as client:
        uploaded = client.post("/v1/artifacts", params={"kind": "onnx"}, content=tiny_onnx_bytes())
        sha: str = uploaded.json()["sha256"]
        registered = client.post(
            "/v1/models/tiny/versions", json={"version": "1", "artifact_sha256": sha}
        )
        assert registered.status_code == 201 and registered.json()["state"] == "validated"
    created = json.loads(server.cli("release", "create", "tiny@1", "-o", "json").stdout)
    return Release("tiny", "1", created["counter"], sha)


# -- enrollment ------------------------------------------------------------------------------


def test_enrollment_issues_credentials_merges_labels_and_pins_the_root(
    fleet_server: FleetServer,
) -> None:
    server = fleet_server.server
    key = PrivateKey.generate()
    token = enroll_token(server, {"site": "plant-7"}, uses=2)

    response = post_enrollment(
        server, token, enrollment_body(key, labels={"site": "elsewhere", "hw": "rpi4"})
    )

    assert response.status_code == 201, response.text
    answer = response.json()
    assert re.fullmatch(r"dev-[a-z2-7]{20}", answer["device_id"])
    assert answer["device_token"].startswith("efd_")
    assert answer["labels"] == {"hw": "rpi4", "site": "plant-7"}  # the token's label wins
    assert answer["mqtt"]["url"] == fleet_server.broker.url
    assert answer["mqtt"]["username"] == answer["device_id"]
    TrustedSet(json.dumps(answer["root"]).encode())  # a self-consistent signed root
    info = device_info(server, answer["device_id"])
    assert info["keyid"] == key.keyid and info["hostname"] == "pi-17"
    assert info["capabilities"]["onnx_opsets"] == [7, 21] and info["state"] is None
    assert "token_hash" not in info and "mqtt_password_hash" not in info
    device = Device(answer["device_id"], answer["device_token"], answer, key)
    connect(fleet_server, device).close()  # the broker knows the issued credential
    password_file = fleet_server.broker.password_file.read_text()
    assert device.id in password_file and device.mqtt_password not in password_file
    with server.admin as client:
        audit = client.get("/v1/audit", params={"object_id": device.id}).json()
    assert [entry["action"] for entry in audit] == ["device.enroll"]


def test_refused_enrollments_use_no_token_use(fleet_server: FleetServer) -> None:
    server = fleet_server.server
    token = enroll_token(server, uses=1)
    key = PrivateKey.generate()
    bad_caps = {**CAPABILITIES, "onnx_opsets": [21, 7]}
    refusals = {
        "capabilities": enrollment_body(key, capabilities=bad_caps),
        "labels": enrollment_body(key, labels={"Bad Key": "x"}),
        "signature": enrollment_body(key, signer=PrivateKey.generate()),
        "json": b'{"signed": {}, "signed": {}}',
    }
    for what, body in refusals.items():
        response = post_enrollment(server, token, body)
        assert response.status_code == 422, (what, response.text)
    assert post_enrollment(server, "efe_" + "x" * 43, enrollment_body(key)).status_code == 401
    assert (
        post_enrollment(server, enroll_token(server).replace("efe_", "efo_"), b"{}").status_code
        == 401
    )

    assert post_enrollment(server, token, enrollment_body(key)).status_code == 201
    again = post_enrollment(server, enroll_token(server), enrollment_body(key))
    assert again.status_code == 409 and "already enrolled" in again.json()["error"]["message"]
    used_up = post_enrollment(server, token, enrollment_body(PrivateKey.generate()))
    assert used_up.status_code == 409 and "used up" in used_up.json()["error"]["message"]


# -- assignments and the desired state -----------------------------------------------------------


def test_assigned_desired_state_arrives_retained_and_verifies(
    fleet_server: FleetServer, release: Release
) -> None:
    server = fleet_server.server
    device = enroll(server, {"site": "a"})

    signed = assign(server, device.id, release)

    assert (signed["sequence"], signed["model"], signed["release"]) == (1, "tiny", release.counter)
    probe = connect(fleet_server, device)
    try:
        assert probe.subscribe(topic(device.id, Channel.DESIRED)) == ["Granted QoS 1"]
        message = probe.next_message()
        assert message is not None and message.retain
        assert verify(message.payload, device) == 1
    finally:
        probe.close()
    with device.http(server) as client:  # the artifact, with the device's own token
        ranged = client.get(f"/v1/artifacts/{release.sha256}", headers={"Range": "bytes=10-"})
        assert ranged.status_code == 206
        assert ranged.content == tiny_onnx_bytes()[10:]
    published = wait_for(
        lambda: device_info(server, device.id)["assignment"]["published_at"], "the broker's ack"
    )
    assert published is not None


def test_assignments_are_refused_for_devices_that_cannot_run_the_release(
    fleet_server: FleetServer, release: Release
) -> None:
    server = fleet_server.server
    old_runtime = enroll(server, capabilities={**CAPABILITIES, "onnx_opsets": [7, 13]})
    tflite_only = enroll(
        server,
        capabilities={**CAPABILITIES, "runtimes": {"ai-edge-litert": "1.2"}, "formats": ["tflite"]},
    )
    with server.admin as client:
        for device, expected in ((old_runtime, "opset 17"), (tflite_only, "no onnx models")):
            response = client.post(
                f"/v1/devices/{device.id}/assignment", json={"model": "tiny", "version": "1"}
            )
            assert response.status_code == 422, response.text
            assert expected in response.json()["error"]["message"]
        missing = client.post(
            f"/v1/devices/{old_runtime.id}/assignment", json={"model": "tiny", "release": 99}
        )
        assert missing.status_code == 404
    assert device_info(server, old_runtime.id)["desired_sequence"] == 0


def test_unreleased_and_revoked_releases_are_refused(
    fleet_server: FleetServer, release: Release
) -> None:
    server = fleet_server.server
    device = enroll(server)
    with server.admin as client:
        sha = client.post(
            "/v1/artifacts", params={"kind": "onnx"}, content=tiny_onnx_bytes(seed=1)
        ).json()["sha256"]
        for version in ("pending", "revoked"):
            body = {"version": version, "artifact_sha256": sha}
            assert client.post("/v1/models/other/versions", json=body).status_code == 201
    server.cli("release", "create", "other@pending", "--offline")
    server.cli("release", "create", "other@revoked")
    server.cli("release", "revoke", "other@revoked", "--reason", "bad outputs")
    for version, expected in (("pending", "pending"), ("revoked", "revoked")):
        done = server.cli("device", "assign", device.id, f"other@{version}", check=False)
        assert done.returncode == 1 and expected in done.stderr, done.stderr


def test_http_long_poll_answers_200_304_and_204(
    fleet_server: FleetServer, release: Release
) -> None:
    server = fleet_server.server
    device, other = enroll(server), enroll(server)
    url = f"/v1/devices/{device.id}/desired"
    assert device_info(server, device.id)["last_seen"] is None
    with device.http(server) as client:
        assert client.get(url).status_code == 204
        # A poll is a sighting: HTTP-only devices have a last_seen too.
        assert device_info(server, device.id)["last_seen"] is not None
        started = time.monotonic()
        assert client.get(url, params={"wait_s": 1}).status_code == 204
        assert time.monotonic() - started >= 0.9

        assign(server, device.id, release)
        first = client.get(url)
        assert first.status_code == 200 and first.headers["etag"] == '"1"'
        assert verify(first.content, device) == 1

        started = time.monotonic()
        unchanged = client.get(url, params={"wait_s": 1}, headers={"If-None-Match": '"1"'})
        assert unchanged.status_code == 304 and unchanged.headers["etag"] == '"1"'
        assert time.monotonic() - started >= 0.9

        answers: list[httpx.Response] = []
        poll = threading.Thread(
            target=lambda: answers.append(
                client.get(url, params={"wait_s": 60}, headers={"If-None-Match": '"1"'})
            )
        )
        started = time.monotonic()
        poll.start()
        time.sleep(1.0)
        assign(server, device.id, release)  # the same release again: a new sequence
        poll.join(30)
        assert answers and answers[0].status_code == 200, answers
        assert answers[0].headers["etag"] == '"2"' and verify(answers[0].content, device) == 2
        assert time.monotonic() - started < 30
    with other.http(server) as client:
        assert client.get(url).status_code == 403
    assert server.http().get(url).status_code == 401
    assert server.admin.get(url).status_code == 401  # an operator token is no device token


# -- reports ----------------------------------------------------------------------------------


def post_reports(server: Server, device: Device, *reports: bytes) -> httpx.Response:
    body = b'{"reports":[' + b",".join(reports) + b"]}"
    with device.http(server) as client:
        return client.post(f"/v1/devices/{device.id}/reports", content=body)


def test_reports_are_idempotent_and_never_move_the_state_back(
    fleet_server: FleetServer, release: Release
) -> None:
    server = fleet_server.server
    device = enroll(server)
    done = {"model": release.model, "release": release.counter, "sha256": release.sha256}
    active = StatusReport.from_dict(
        {"_type": "status", "device": device.id, "seq": 1, "time": NOW, "state": "committed",
         "active": done}
    ).active  # fmt: skip
    batch = [
        status(device.id, 1, UpdateState.NOTIFIED),
        status(device.id, 2, UpdateState.DOWNLOADING),
        status(device.id, 3, UpdateState.COMMITTED, active=active),
    ]

    first = post_reports(server, device, *batch)
    again = post_reports(server, device, *batch)
    newer = post_reports(server, device, status(device.id, 5, UpdateState.COMMITTED, active=active))
    older = post_reports(
        server, device, status(device.id, 4, UpdateState.FAILED, reason="smoke_test")
    )

    assert first.json() == {"accepted": 3, "duplicates": 0, "last_seq": 3}
    assert again.json() == {"accepted": 0, "duplicates": 3, "last_seq": 3}
    assert newer.json()["last_seq"] == 5
    assert older.json() == {"accepted": 1, "duplicates": 0, "last_seq": 5}
    info = device_info(server, device.id)
    assert info["state"] == "committed" and info["last_reason"] is None
    assert info["current"] == done
    assert [r["seq"] for r in info["reports"]] == [5, 4, 3, 2, 1]

    probe = connect(fleet_server, device)  # MQTT takes the same path
    try:
        probe.publish(topic(device.id, Channel.STATUS), status(device.id, 5, UpdateState.FAILED))
        probe.publish(topic(device.id, Channel.STATUS), status(device.id, 6, UpdateState.IDLE))
    finally:
        probe.close()
    info = wait_for(
        lambda: (i := device_info(server, device.id))["last_seq"] == 6 and i, "report 6"
    )
    assert info["state"] == "idle"
    assert [r["seq"] for r in info["reports"]] == [6, 5, 4, 3, 2, 1]
    assert [r["state"] for r in info["reports"]][1] == "committed"  # seq 5 kept its first copy

    other = enroll(server)
    for body in (
        [status(other.id, 1)],  # another device's report
        [b'{"_type":"status"}'],
        [status(device.id, n) for n in range(7, 508)],  # 501 reports
    ):
        refused = post_reports(server, device, *body)
        assert refused.status_code == 422, refused.text
    with device.http(server) as client:
        forbidden = client.post(f"/v1/devices/{other.id}/reports", content=b'{"reports":[]}')
        assert forbidden.status_code == 403


def test_malformed_mqtt_messages_are_counted_and_dropped(
    fleet_server: FleetServer, release: Release
) -> None:
    server = fleet_server.server
    device, other = enroll(server), enroll(server)
    own = topic(device.id, Channel.STATUS)
    probe = connect(fleet_server, device)
    try:
        for payload in (
            b"not json",
            b'{"_type":"status"}',
            b'{"seq":1,"seq":2}',
            status(other.id, 1, UpdateState.COMMITTED),  # names another device
            # well-formed JSON, but counters beyond any database column
            canonical.encode(
                {
                    **StatusReport.decode(status(device.id, 2**20)).to_dict(),
                    "seq": 2**40,
                    "assignment_sequence": 2**40,
                }
            ),
        ):
            probe.publish(own, payload)
        wrong_presence = Presence(other.id, online=True).encode()
        probe.publish(topic(device.id, Channel.PRESENCE), wrong_presence)
        probe.publish(own, status(device.id, 1, UpdateState.STAGED))
    finally:
        probe.close()

    info = wait_for(
        lambda: (
            (i := device_info(server, device.id))["last_seq"] == 1
            and i["malformed_reports"] == 6
            and i
        ),
        "the valid report after six malformed ones",
    )
    assert info["state"] == "staged"
    assert device_info(server, other.id)["last_seq"] == 0
    log = server.log.read_text()
    assert f"dropped MQTT message on {own}" in log
    assert fleet_server.mqtt_password not in log and device.mqtt_password not in log


def test_presence_and_last_will_set_online(fleet_server: FleetServer, release: Release) -> None:
    server = fleet_server.server
    device = enroll(server)
    presence = topic(device.id, Channel.PRESENCE)
    offline = Presence(device.id, online=False).encode()
    probe = connect(fleet_server, device, will=(presence, offline))
    probe.publish(presence, Presence(device.id, online=True).encode(), retain=True)
    wait_for(lambda: device_info(server, device.id)["online"], "online")

    sock = probe.client.socket()  # drop the connection without DISCONNECT: the will fires
    assert sock is not None
    sock.close()
    wait_for(lambda: not device_info(server, device.id)["online"], "offline by the last will")
    probe.client.loop_stop()


# -- isolation and decommissioning ---------------------------------------------------------


def test_a_device_cannot_read_or_write_another_devices_topics(
    fleet_server: FleetServer, release: Release
) -> None:
    server = fleet_server.server
    mallory, victim = enroll(server), enroll(server)
    assign(server, victim.id, release)  # the victim has a retained desired state
    watcher = observer(fleet_server)
    attacker = connect(fleet_server, mallory)
    try:
        for target in (
            topic(victim.id, Channel.DESIRED),
            topic(victim.id, Channel.STATUS),
            "edgefleet/v1/devices/+/desired",
            "edgefleet/v1/#",
        ):
            attacker.subscribe(target)  # may be granted; nothing may arrive
        forged = status(victim.id, 1, UpdateState.FAILED, reason="forged")
        attacks = [
            (topic(victim.id, Channel.STATUS), forged, False),
            (topic(victim.id, Channel.PRESENCE), Presence(victim.id, online=True).encode(), True),
            (topic(victim.id, Channel.DESIRED), b"forged desired", True),
        ]
        for name, payload, retain in attacks:
            acked = attacker.publish(name, payload, retain=retain)
            if fleet_server.protocol == 5:
                assert acked == "Not authorized", (name, acked)
        barrier = status(mallory.id, 1, UpdateState.IDLE)
        attacker.publish(topic(mallory.id, Channel.STATUS), barrier)
        seen = []
        while (message := watcher.next_message(5)) is not None:
            seen.append(message)
            if message.payload == barrier:
                break
        assert seen and seen[-1].payload == barrier, "the barrier never arrived"
        assert not [m for m in seen if victim.id in m.topic and not m.retain]
        assert attacker.next_message(1) is None  # not the victim's retained desired state
    finally:
        attacker.close()
        watcher.close()
    wait_for(lambda: device_info(server, mallory.id)["last_seq"] == 1, "the barrier report")
    info = device_info(server, victim.id)
    assert (info["last_seq"], info["online"], info["malformed_reports"]) == (0, False, 0)
    victim_probe = connect(fleet_server, victim)
    try:
        victim_probe.subscribe(topic(victim.id, Channel.DESIRED))
        message = victim_probe.next_message()
        assert message is not None and verify(message.payload, victim) == 1
    finally:
        victim_probe.close()


def test_decommissioning_cuts_http_and_mqtt_access(
    fleet_server: FleetServer, release: Release
) -> None:
    server = fleet_server.server
    device = enroll(server)
    assign(server, device.id, release)
    probe = connect(fleet_server, device)
    probe.subscribe(topic(device.id, Channel.DESIRED))
    assert probe.next_message() is not None

    server.cli("device", "decommission", device.id, "--yes")

    assert probe.disconnected.wait(15), "the broker kept the decommissioned device connected"
    probe.client.loop_stop()
    again = fleet_server.broker.probe(
        device.id, device.mqtt_password, protocol=fleet_server.protocol
    )
    assert again.connect() != "Success"
    again.close()
    assert device.id not in fleet_server.broker.password_file.read_text()
    with device.http(server) as client:
        assert client.get(f"/v1/devices/{device.id}/desired").status_code == 401
        assert client.get(f"/v1/artifacts/{release.sha256}").status_code == 401

    def cleared() -> bool:
        watcher = observer(fleet_server, topic(device.id, Channel.DESIRED))
        try:
            return watcher.next_message(1) is None
        finally:
            watcher.close()

    wait_for(cleared, "the retained desired state to be cleared")
    info = json.loads(server.cli("device", "show", device.id, "-o", "json").stdout)
    assert info["decommissioned_at"] is not None
    listed = json.loads(server.cli("device", "list", "-o", "json").stdout)
    assert device.id not in [d["id"] for d in listed]
    again_delete = server.cli("device", "decommission", device.id, "--yes", check=False)
    assert again_delete.returncode == 1 and "decommissioned" in again_delete.stderr


def test_device_cli_lists_labels_and_shows(fleet_server: FleetServer, release: Release) -> None:
    server = fleet_server.server
    device = enroll(server, {"ring": "canary", "hw": "rpi4"})

    server.cli("device", "label", device.id, "site=b", "--remove", "hw")
    listed = json.loads(server.cli("device", "list", "--label", "ring=canary", "-o", "json").stdout)
    table = server.cli("device", "list", "--label", "site=b").stdout
    shown = json.loads(server.cli("device", "show", device.id, "-o", "json").stdout)

    assert [d["id"] for d in listed] == [device.id]
    assert device.id in table
    assert shown["labels"] == {"ring": "canary", "site": "b"}
    bad = server.cli("device", "label", device.id, "Bad=x", check=False)
    assert bad.returncode == 1 and "invalid" in bad.stderr
    assert post_reports(server, device, status(device.id, 1, UpdateState.FAILED)).is_success
    with server.admin as client:
        failed = client.get("/v1/devices", params={"state": "failed", "label": "ring=canary"})
        assert [d["id"] for d in failed.json()] == [device.id]
        idle = client.get("/v1/devices", params={"state": "idle", "label": "ring=canary"})
        assert idle.json() == []
        bad = client.get("/v1/devices", params={"label": "no-equals-sign"})
        assert bad.status_code == 422


# -- broker restart ---------------------------------------------------------------------------


def test_assignments_and_reports_flow_again_after_a_broker_restart(
    fleet_server: FleetServer, release: Release
) -> None:
    server = fleet_server.server
    device = enroll(server)
    client_id = f"device-{device.id}"
    probe = connect(fleet_server, device, client_id=client_id, clean=False)
    probe.subscribe(topic(device.id, Channel.DESIRED))
    probe.close()

    fleet_server.broker.restart()
    signed = assign(server, device.id, release)  # the control plane may still be reconnecting

    probe = connect(fleet_server, device, client_id=client_id, clean=False)
    try:  # the persistent session kept the subscription across the restart
        message = probe.next_message(20)
        assert message is not None and verify(message.payload, device) == signed["sequence"]
        probe.publish(topic(device.id, Channel.STATUS), status(device.id, 1, UpdateState.NOTIFIED))
    finally:
        probe.close()
    info = wait_for(
        lambda: (i := device_info(server, device.id))["last_seq"] == 1 and i, "the report"
    )
    assert info["state"] == "notified"
