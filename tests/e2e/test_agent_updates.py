"""Real agents, a real control plane and a real Mosquitto: updates and their faults.

Every test enrolls its own ``fleet-agent`` process (``tests.support.agent``)
against ``fleetctl serve`` with a Mosquitto broker whose password file the
control plane keeps in sync, and assigns releases with ``fleetctl device
assign``. Faults are real: ``kill -9`` of the agent process at every workflow
state, a proxy that cuts, inflates or un-Ranges downloads, a tmpfs that fills,
messages published on the broker by a client holding the control plane's
credential (forged, expired and stale assignments), and a broker restart.

After each fault the invariant is the same: exactly one complete, committed
model is active on the device, the agent carries on by itself, and the control
plane knows what happened from the agent's reports.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleetcore.keys import PrivateKey
from fleetcore.protocol import Channel, topic
from models.tiny import tiny_onnx_bytes
from tests.e2e.conftest import FleetServer, Server
from tests.support.agent import AgentProcess
from tests.support.faulty_proxy import Proxy, faulty_proxy
from tests.support.net import free_port
from tests.support.signer import Signer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("fleet_server", ["sqlite"], indirect=True),
]

MODEL = "tiny-agent"
UPDATE = {"probation_s": 1.0, "probation_check_s": 0.2, "crash_loop_boots": 2}
#: Bytes of padding in the large release, bigger than the tmpfs of the disk test.
BIG_PAD = 3 * 1024 * 1024


@dataclass(frozen=True)
class Release:
    version: str
    counter: int
    sha256: str
    length: int


def _release(server: Server, version: str, data: bytes) -> Release:
    with server.admin as client:
        uploaded = client.post("/v1/artifacts", params={"kind": "onnx"}, content=data)
        assert uploaded.status_code in (200, 201), uploaded.text
        sha: str = uploaded.json()["sha256"]
        registered = client.post(
            f"/v1/models/{MODEL}/versions", json={"version": version, "artifact_sha256": sha}
        )
        assert registered.status_code == 201, registered.text
    created = json.loads(server.cli("release", "create", f"{MODEL}@{version}", "-o", "json").stdout)
    return Release(version, int(created["counter"]), sha, len(data))


@pytest.fixture(scope="module")
def releases(fleet_server: FleetServer) -> dict[str, Release]:
    server = fleet_server.server
    made = {v: _release(server, v, tiny_onnx_bytes(seed=int(v))) for v in ("1", "2", "3")}
    made["big"] = _release(server, "4", tiny_onnx_bytes(seed=4, pad_bytes=BIG_PAD))
    return made


def manifest_bytes(server: Server, release: Release) -> bytes:
    with server.admin as client:
        response = client.get(f"/v1/releases/{MODEL}/{release.counter}/manifest")
        assert response.status_code == 200, response.text
        return response.content


def enroll_token(server: Server) -> str:
    with server.admin as client:
        response = client.post("/v1/enroll-tokens", json={"labels": {"suite": "agent"}})
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token


def assign(server: Server, device: str, release: Release) -> int:
    done = server.cli("device", "assign", device, f"{MODEL}@{release.version}", "-o", "json")
    sequence: int = json.loads(done.stdout)["sequence"]
    return sequence


def device_info(server: Server, device: str) -> dict[str, Any]:
    with server.admin as client:
        response = client.get(f"/v1/devices/{device}")
        assert response.status_code == 200, response.text
        info: dict[str, Any] = response.json()
        return info


def wait_server(
    server: Server, device: str, check: Callable[[dict[str, Any]], bool], timeout_s: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    info: dict[str, Any] = {}
    while time.monotonic() < deadline:
        info = device_info(server, device)
        if check(info):
            return info
        time.sleep(0.2)
    raise AssertionError(f"the control plane never saw the expected device state: {info}")


def active(agent: AgentProcess) -> tuple[str, int] | None:
    found = agent.status().get("active")
    return None if found is None else (found["model"], found["release"])


def committed_on_server(release: Release) -> Callable[[dict[str, Any]], bool]:
    def check(info: dict[str, Any]) -> bool:
        current = info.get("current") or {}
        return bool(info.get("state") == "committed" and current.get("release") == release.counter)

    return check


class Fleet:
    """Enrolls agents for one test and stops them all at its end."""

    def __init__(self, fleet: FleetServer, root: Path) -> None:
        self.fleet = fleet
        self.server = fleet.server
        self.root = root
        self.agents: list[AgentProcess] = []

    def agent(
        self,
        name: str,
        *,
        transport: str = "mqtt",
        server_url: str | None = None,
        data_dir: Path | None = None,
        **sections: dict[str, Any],
    ) -> tuple[AgentProcess, str]:
        tables: dict[str, dict[str, Any]] = {"update": dict(UPDATE)}
        for key, entries in sections.items():
            tables.setdefault(key, {}).update(entries)
        agent = AgentProcess.create(
            self.root / name,
            server=server_url or self.server.url,
            transport=transport,
            **tables,
        )
        if data_dir is not None:
            _set_data_dir(agent, data_dir)
        self.agents.append(agent)
        status = agent.enroll(enroll_token(self.server))
        device: str = status["device_id"]
        return agent, device

    def committed(self, agent: AgentProcess, device: str, release: Release) -> None:
        """Assign ``release`` and wait until the agent and the control plane both say committed."""
        sequence = assign(self.server, device, release)
        agent.wait_for_state("committed", sequence=sequence, timeout_s=60)
        assert active(agent) == (MODEL, release.counter)
        wait_server(self.server, device, committed_on_server(release))

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()


def _set_config(agent: AgentProcess, key: str, value: str) -> None:
    """Replace ``key = …`` in the agent's configuration (``value`` as TOML)."""
    text = agent.config_path.read_text()
    lines = [
        f"{key} = {value}" if line.split("=")[0].strip() == key else line
        for line in text.splitlines()
    ]
    agent.config_path.write_text("\n".join(lines) + "\n")


def _set_data_dir(agent: AgentProcess, data_dir: Path) -> None:
    _set_config(agent, "data_dir", json.dumps(str(data_dir)))
    agent.data_dir = data_dir


@pytest.fixture
def fleet(fleet_server: FleetServer, tmp_path: Path) -> Iterator[Fleet]:
    made = Fleet(fleet_server, tmp_path)
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
def proxy(fleet_server: FleetServer) -> Iterator[Proxy]:
    with faulty_proxy(fleet_server.server.url) as started:
        yield started


# -- the happy paths -------------------------------------------------------------------------


def test_mqtt_update_commits_and_reports_every_state(
    fleet: Fleet, releases: dict[str, Release]
) -> None:
    agent, device = fleet.agent("a")
    agent.start()
    fleet.committed(agent, device, releases["1"])
    fleet.committed(agent, device, releases["2"])
    info = device_info(fleet.server, device)
    assert (info["previous"] or {}).get("release") == releases["1"].counter
    states = [r["state"] for r in info.get("recent_reports", info.get("reports", []))]
    for state in ("downloading", "verifying", "smoke_test", "probation", "committed"):
        assert state in states, states
    assert agent.terminate() == 0


def test_http_only_mode(fleet: Fleet, releases: dict[str, Release]) -> None:
    agent, device = fleet.agent("http", transport="http")
    agent.start()
    fleet.committed(agent, device, releases["1"])
    assert agent.status()["transport"]["current"] == "http"


# -- kill -9 at every state ------------------------------------------------------------------

STATES = ("notified", "downloading", "verifying", "staged", "smoke_test", "activating", "probation")


@pytest.mark.parametrize("state", STATES)
def test_kill9_at_every_state_resumes_to_one_committed_model(
    fleet: Fleet, releases: dict[str, Release], state: str
) -> None:
    agent, device = fleet.agent(f"kill-{state}")
    agent.start()
    fleet.committed(agent, device, releases["1"])
    agent.restart(pause_at=state, kill=False)
    sequence = assign(fleet.server, device, releases["2"])
    agent.wait_paused(state)
    agent.kill9()
    # Whatever was on disk when the process died: one complete model is active.
    assert active(agent) in ((MODEL, releases["1"].counter), (MODEL, releases["2"].counter))
    agent.start()
    agent.wait_for_state("committed", sequence=sequence)
    assert active(agent) == (MODEL, releases["2"].counter)
    wait_server(fleet.server, device, committed_on_server(releases["2"]))


def test_crash_loop_in_probation_reverts_to_the_previous_model(
    fleet: Fleet, releases: dict[str, Release]
) -> None:
    # A long probation, so the agent is still on probation each time it dies.
    agent, device = fleet.agent("crashloop", update={"probation_s": 120.0})
    agent.start()
    first = assign(fleet.server, device, releases["1"])
    agent.wait_for(lambda s: s.get("state") == "probation", what="probation of release 1")
    # Commit release 1 the clean way: a shorter probation after a clean restart.
    agent.terminate()
    _set_config(agent, "probation_s", "1.0")
    agent.start()
    agent.wait_for_state("committed", sequence=first)
    _set_config(agent, "probation_s", "120.0")
    agent.restart(kill=False)
    sequence = assign(fleet.server, device, releases["2"])
    agent.wait_for(
        lambda s: s.get("state") == "probation" and (s.get("update") or {}).get("boots") == 0,
        what="probation of release 2",
    )
    for boots in range(1, UPDATE["crash_loop_boots"] + 1):
        agent.kill9()
        agent.start()
        agent.wait_for(
            lambda s, n=boots: (s.get("update") or {}).get("boots") == n,
            what=f"boot {boots} counted on probation",
        )
        assert agent.status()["state"] == "probation"
    agent.kill9()
    agent.start()
    status = agent.wait_for_state("reverted", sequence=sequence)
    assert status["reason"] == "crash-loop", status
    assert active(agent) == (MODEL, releases["1"].counter)
    info = wait_server(fleet.server, device, lambda i: i.get("state") == "reverted")
    assert (info["current"] or {}).get("release") == releases["1"].counter


# -- downloads -------------------------------------------------------------------------------


def test_interrupted_download_resumes_with_range(
    fleet: Fleet, releases: dict[str, Release], proxy: Proxy
) -> None:
    agent, device = fleet.agent("cut", server_url=proxy.url)
    agent.start()
    proxy.faults.cut_after_bytes = releases["big"].length // 2
    proxy.faults.cuts_left = 1
    fleet.committed(agent, device, releases["big"])
    ranges = proxy.faults.artifact_requests()
    assert len(ranges) >= 2, ranges
    assert ranges[-1] is not None and ranges[-1].startswith("bytes="), ranges


def test_a_server_that_ignores_range_still_ends_in_one_verified_model(
    fleet: Fleet, releases: dict[str, Release], proxy: Proxy
) -> None:
    agent, device = fleet.agent("norange", server_url=proxy.url)
    agent.start()
    proxy.faults.ignore_range = True
    proxy.faults.cut_after_bytes = releases["big"].length // 2
    proxy.faults.cuts_left = 1
    fleet.committed(agent, device, releases["big"])
    assert len(proxy.faults.artifact_requests()) >= 2


def test_more_bytes_than_signed_are_refused_and_reported(
    fleet: Fleet, releases: dict[str, Release], proxy: Proxy
) -> None:
    agent, device = fleet.agent("inflated", server_url=proxy.url)
    agent.start()
    fleet.committed(agent, device, releases["1"])
    proxy.faults.extra_bytes = 1000
    sequence = assign(fleet.server, device, releases["2"])
    status = agent.wait_for_state("failed", sequence=sequence, timeout_s=90)
    assert status["reason"] in ("length", "download"), status
    assert active(agent) == (MODEL, releases["1"].counter)
    wait_server(fleet.server, device, lambda i: i.get("state") == "failed")
    # The mirror is fixed: the next assignment goes through.
    proxy.faults.extra_bytes = 0
    fleet.committed(agent, device, releases["2"])


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"this test needs to mount a tmpfs (run as root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_disk_that_fills_during_staging_keeps_the_active_model(
    fleet: Fleet, releases: dict[str, Release], small_disk: Path
) -> None:
    agent, device = fleet.agent("disk", data_dir=small_disk / "data")
    agent.start()
    fleet.committed(agent, device, releases["1"])
    sequence = assign(fleet.server, device, releases["big"])
    status = agent.wait_for_state("failed", sequence=sequence, timeout_s=90)
    assert status["reason"] == "disk", status
    assert active(agent) == (MODEL, releases["1"].counter)
    assert not list((small_disk / "data" / "downloads").glob("*.part"))
    wait_server(fleet.server, device, lambda i: i.get("state") == "failed")
    # Still alive and updating: a small release fits.
    fleet.committed(agent, device, releases["2"])


# -- bad metadata on the broker --------------------------------------------------------------


def _publish(fleet: Fleet, device: str, payload: bytes, *, retain: bool = True) -> None:
    probe = fleet.fleet.broker.probe("control-plane", fleet.fleet.mqtt_password)
    assert probe.connect() == "Success"
    try:
        assert probe.publish(topic(device, Channel.DESIRED), payload, qos=1, retain=retain) in (
            "Success",
            "",
        )
    finally:
        probe.close()


def _signer(fleet: Fleet) -> Signer:
    return Signer.for_server(fleet.server.data_dir / "trust")


def test_a_release_that_fails_its_smoke_test_never_serves(
    fleet: Fleet, releases: dict[str, Release]
) -> None:
    agent, device = fleet.agent("smoke")
    agent.start()
    fleet.committed(agent, device, releases["1"])
    signer = _signer(fleet)
    bad = signer.wrong_smoke_release(manifest_bytes(fleet.server, releases["2"]), release=900)
    _publish(fleet, device, signer.desired(device, bad, sequence=10_000))
    # The smoke test runs before activation: the update fails, release 1 never stopped serving.
    status = agent.wait_for_state("failed", sequence=10_000)
    assert status["reason"] == "smoke", status
    assert active(agent) == (MODEL, releases["1"].counter)
    info = wait_server(fleet.server, device, lambda i: i.get("state") == "failed")
    assert info.get("last_reason", info.get("reason")) == "smoke"


@pytest.mark.parametrize("kind", ["forged", "expired"])
def test_forged_or_expired_assignments_on_mqtt_are_rejected(
    fleet: Fleet, releases: dict[str, Release], kind: str
) -> None:
    agent, device = fleet.agent(f"bad-{kind}")
    agent.start()
    fleet.committed(agent, device, releases["1"])
    signer = _signer(fleet)
    manifest = manifest_bytes(fleet.server, releases["2"])
    if kind == "forged":
        payload = signer.desired(device, manifest, sequence=500, signers=[PrivateKey.generate()])
    else:
        payload = signer.desired(device, manifest, sequence=500, expires_in=-timedelta(hours=1))
    _publish(fleet, device, payload)
    status = agent.wait_for(
        lambda s: s.get("state") == "rejected", what="a rejected assignment", timeout_s=30
    )
    assert status["reason"] == ("threshold" if kind == "forged" else "expiry"), status
    assert active(agent) == (MODEL, releases["1"].counter)
    wait_server(fleet.server, device, lambda i: i.get("state") == "rejected")
    # The device still takes genuine assignments.
    fleet.committed(agent, device, releases["2"])


def test_a_retained_stale_assignment_never_starts_an_update(
    fleet: Fleet, releases: dict[str, Release]
) -> None:
    agent, device = fleet.agent("stale")
    watcher = fleet.fleet.broker.probe("control-plane", fleet.fleet.mqtt_password)
    assert watcher.connect() == "Success"
    watcher.subscribe(topic(device, Channel.DESIRED))
    agent.start()
    fleet.committed(agent, device, releases["1"])
    message = watcher.next_message()
    assert message is not None
    old = message.payload
    watcher.close()
    fleet.committed(agent, device, releases["2"])
    sequence = agent.status()["update"]["assignment_sequence"]
    # A broker restored from an old backup (or a replaying attacker) retains the old one.
    agent.terminate()
    _publish(fleet, device, old)
    _publish(fleet, device, old)  # and delivers it twice
    agent.start()
    time.sleep(3)
    status = agent.status()
    assert active(agent) == (MODEL, releases["2"].counter)
    assert status["state"] in ("committed", "rejected"), status
    # No second update began: the last accepted assignment is still the newest one.
    assert status["update"]["assignment_sequence"] == sequence, status


def test_a_broker_restart_mid_update(
    fleet: Fleet, releases: dict[str, Release], proxy: Proxy
) -> None:
    agent, device = fleet.agent("broker-restart", server_url=proxy.url)
    agent.start()
    fleet.committed(agent, device, releases["1"])
    proxy.faults.delay_per_chunk_s = 0.1  # a slow link: the download takes seconds
    sequence = assign(fleet.server, device, releases["big"])
    agent.wait_for(lambda s: s.get("state") == "downloading", what="the download to start")
    fleet.fleet.broker.restart()
    agent.wait_for_state("committed", sequence=sequence, timeout_s=120)
    assert agent.running
    assert active(agent) == (MODEL, releases["big"].counter)
    # The reports queued while the broker was down reach the control plane.
    wait_server(fleet.server, device, committed_on_server(releases["big"]), timeout_s=60)
    assert agent.status()["outbox"]["depth"] == 0


# -- hot swap under load ---------------------------------------------------------------------


def test_hot_swap_under_load_fails_no_request(
    fleet: Fleet, releases: dict[str, Release], tmp_path: Path
) -> None:
    port = free_port()
    agent, device = fleet.agent("hotswap", local_api={"listen": f"127.0.0.1:{port}"})
    agent.start()
    fleet.committed(agent, device, releases["1"])
    url = f"http://127.0.0.1:{port}"
    failures: list[str] = []
    served: dict[int, int] = {}
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while not stop.is_set():
                try:
                    response = client.post(
                        "/v1/infer", json={"inputs": {"features": [[0.1, 0.2, 0.3, 0.4]]}}
                    )
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                    continue
                release = response.json()["model"]["release"]
                served[release] = served.get(release, 0) + 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        fleet.committed(agent, device, releases["2"])
        fleet.committed(agent, device, releases["3"])
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert {releases[v].counter for v in ("1", "2", "3")} <= set(served), served
