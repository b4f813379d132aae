"""Staged rollouts end to end: real agents, a real broker, real control-plane replicas.

One deployment serves the whole module (:mod:`tests.e2e.rollout_support`):
PostgreSQL, Mosquitto, ``fleetctl serve`` behind a load balancer, and 22 real
``fleet-agent`` processes on MQTT, labelled ``grp=good`` (20) or ``grp=bad``
(2) and spread over three rings (``ring=r0|r1|r2``). Every agent first
commits a baseline release; each test then ships a release of its own and
checks what the agents serve (``fleet-agent status``), what the control plane
knows (devices, rollout targets) and what the audit log says:

1. a 3-wave rollout in which the ``grp=bad`` agents fail their smoke test
   (``EDGEFLEET_AGENT_FAULT=smoke``): the install gate fails, every device the
   rollout touched goes back to its previous release, later waves never start;
2. a revoke that reaches a device which was offline when it happened;
3. the control plane killed with ``kill -9`` in the middle of a wave and
   restarted: each device is assigned exactly once and none is skipped;
4. two replicas on one database driving three rollouts: one lease owner per
   rollout, and the survivor takes over when the other replica dies.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent._faults import FAULT_ENV
from tests.e2e.rollout_support import (
    Api,
    Deployment,
    Fleet,
    Member,
    Release,
    Replica,
    deployment,
    serving,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MODEL = "ro-tiny"
GOOD, BAD = 20, 2
#: A replica's hold on a rollout; another takes over this long after it dies.
LEASE_S = 5.0
TERMINAL = ("completed", "aborted", "failed", "rolled_back")


@dataclass
class Cluster:
    deployment: Deployment
    fleet: Fleet
    baseline: Release

    @property
    def replica(self) -> Replica:
        return self.deployment.replicas[0]

    def api(self) -> Api:
        return self.deployment.api()

    def context(self) -> str:
        return self.deployment.logs()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("rollouts")
    env = {"EDGEFLEET_ROLLOUT_TICK_S": "0.5", "EDGEFLEET_ROLLOUT_LEASE_S": str(LEASE_S)}
    with deployment(root, env) as made:
        fleet = Fleet(made, root / "agents")
        try:
            groups = ["good"] * GOOD + ["bad"] * BAD
            fleet.enroll([{"grp": g, "ring": f"r{i % 3}"} for i, g in enumerate(groups)])
            fleet.start()
            with made.api() as api:
                baseline = api.release(MODEL, "1.0.0", seed=100)
                for member in fleet.members:
                    api.assign(member.device_id, baseline)
            fleet.wait_all(serving(baseline), what=f"the baseline {baseline}")
            yield Cluster(made, fleet, baseline)
        finally:
            fleet.stop()


@pytest.fixture(autouse=True)
def no_rollout_left_running(cluster: Cluster) -> Iterator[None]:
    """A test that fails half-way must not hold the devices for the next one."""
    yield
    with cluster.api() as api, contextlib.suppress(httpx.HTTPError, AssertionError):
        for rollout in api.rollouts(MODEL):
            if rollout["phase"] not in TERMINAL:
                api.client.post(f"/v1/rollouts/{rollout['id']}/abort")


@pytest.fixture
def bad_group_fails_smoke(cluster: Cluster) -> Iterator[list[Member]]:
    """The ``grp=bad`` agents, restarted so that they fail every smoke test."""
    bad = [m for m in cluster.fleet.members if m.labels["grp"] == "bad"]
    cluster.fleet.restart(bad, env={FAULT_ENV: "smoke"})
    try:
        yield bad
    finally:
        cluster.fleet.restart(bad)


def serving_now(cluster: Cluster) -> dict[str, tuple[str, int] | None]:
    return {m.device_id: m.active() for m in cluster.fleet.members}


def sequence_of(member: Member) -> int | None:
    upd = member.agent.status().get("update") or {}
    found = upd.get("assignment_sequence")
    return None if found is None else int(found)


def assignments(api: Api, device: str, release: Release) -> list[dict[str, Any]]:
    """The device's ``device.assign`` audit entries for ``release``, oldest first."""
    entries = [
        e["change"] | {"actor": e["actor"]}
        for e in api.audit("device", device)
        if e["action"] == "device.assign"
        and e["change"]["model"] == release.model
        and e["change"]["release"] == release.counter
    ]
    return sorted(entries, key=lambda c: int(c["sequence"]))


def rollout_spec(release: Release, **extra: Any) -> dict[str, Any]:
    return {
        "model": release.model,
        "release": release.counter,
        "selector": "suite=rollouts",
        "device_timeout": "120s",
        **extra,
    }


def check_assigned_once(api: Api, name: str, targets: list[dict[str, Any]], release: Release) -> None:
    """Each target committed after exactly one assignment, the rollout's own, still the newest."""
    for target in targets:
        device = target["device_id"]
        assert target["status"] == "committed", target
        assert target["attempts"] == 1, target
        signed = assignments(api, device, release)
        assert [(s["actor"], s["sequence"]) for s in signed] == [
            (f"rollout:{name}", target["sequence"])
        ], (device, signed)
        info = api.device(device)
        assert info["desired_sequence"] == target["sequence"], (device, info)
        assert info["state"] == "committed", info
        assert (info["current"] or {}).get("release") == release.counter, info


# -- 1. a labelled group fails its smoke test ---------------------------------------------------


def test_a_group_failing_its_smoke_test_fails_the_wave_and_reverts_the_rollout(
    cluster: Cluster, bad_group_fails_smoke: list[Member]
) -> None:
    fleet = cluster.fleet
    members = fleet.by_id()
    bad = {m.device_id for m in bad_group_fails_smoke}
    before = serving_now(cluster)
    sequences_before = {m.device_id: sequence_of(m) for m in fleet.members}
    with cluster.api() as api:
        release = api.release(MODEL, "2.0.0", seed=200)
        # Stratified by grp: 20 good devices and 2 bad ones interleave evenly, so
        # the first bad device is the 6th in the order (wave 2 of 5..11) and the
        # second the 17th (wave 3); wave 1 is all good, whatever the hashes.
        spec = rollout_spec(
            release,
            stratify_by="grp",
            waves=[{"percent": 20}, {"percent": 50}, {"percent": 100}],
            gates={"install": {"min_success_ratio": 0.9, "max_failure_ratio": 0.1}},
            on_failure="revert_all",
        )
        created = api.create_rollout("smoke-fails", spec)
        rollout_id = created["rollout"]["id"]
        assert created["plan"]["wave_sizes"] == [5, 6, 11], created["plan"]
        final = api.wait_rollout(
            rollout_id,
            lambda r: r["phase"] in TERMINAL,
            timeout_s=180,
            what="an end",
            context=cluster.context,
        )
        assert final["phase"] == "failed", final
        assert final["reason"] == "install gate failed", final
        targets = api.targets(rollout_id)
        audit = api.audit("rollout", rollout_id)
        device_views = {t["device_id"]: api.device(t["device_id"]) for t in targets}

    by_wave: dict[int, list[dict[str, Any]]] = {}
    for target in targets:
        by_wave.setdefault(target["wave"], []).append(target)
    assert sorted((w, len(t)) for w, t in by_wave.items()) == [(0, 5), (1, 6), (2, 11)]
    assert {t["device_id"] for t in by_wave[0]}.isdisjoint(bad)
    assert sorted(t["wave"] for t in targets if t["device_id"] in bad) == [1, 2]

    # Waves 1 and 2 were assigned, then every device of them was given its previous release.
    for target in by_wave[0] + by_wave[1]:
        device = target["device_id"]
        assert target["status"] == "rolled_back", target
        assert target["previous_release"] == cluster.baseline.counter, target
        assert target["sequence"] is not None, target
        assert target["revert_sequence"] > target["sequence"], target
        assert device_views[device]["desired_sequence"] == target["revert_sequence"], target
    # Wave 3 never started: nothing was signed for its devices.
    for target in by_wave[2]:
        assert target["status"] == "cancelled", target
        assert target["sequence"] is None and target["attempts"] == 0, target
        assert device_views[target["device_id"]]["desired_sequence"] == sequences_before[
            target["device_id"]
        ], target

    # The agents: every touched device serves its previous release again, as committed.
    touched = [members[t["device_id"]] for t in by_wave[0] + by_wave[1]]
    revert_sequence = {t["device_id"]: t["revert_sequence"] for t in by_wave[0] + by_wave[1]}
    fleet.wait_all(
        lambda m, s: serving(cluster.baseline)(m, s)
        and (s.get("update") or {}).get("assignment_sequence") == revert_sequence[m.device_id],
        members=touched,
        what="the revert to the baseline",
    )
    assert serving_now(cluster) == before
    # Wave 1 had committed the new release before it was rolled back.
    for target in by_wave[0]:
        status = members[target["device_id"]].agent.status(cli=True)  # the real command
        assert status["active"]["release"] == cluster.baseline.counter, status
        assert status["previous"]["release"] == release.counter, status
        view = device_views[target["device_id"]]
        assert (view["previous"] or {}).get("release") in (release.counter, None), view
    for device in bad:
        signed = assignments(api_for(cluster), device, release)
        if signed:  # the wave-2 device: it tried and failed its smoke test
            reports = api_for(cluster).device(device)["reports"]
            assert any(
                r["state"] == "failed" and r["report"].get("reason") == "smoke" for r in reports
            ), reports
    # Wave 3's devices never heard of the release.
    for target in by_wave[2]:
        assert sequence_of(members[target["device_id"]]) == sequences_before[target["device_id"]]

    # The audit log: wave 1 passed, wave 2 failed with the gate's evidence, all reverted.
    actions = [(e["action"], e["change"].get("wave")) for e in reversed(audit)]
    assert ("wave.passed", 0) in actions, actions
    assert ("wave.opened", 1) in actions, actions
    assert ("wave.opened", 2) not in actions, actions
    failed = [e["change"] for e in audit if e["action"] == "wave.failed"]
    assert len(failed) == 1, actions
    evidence = failed[0]
    assert evidence["wave"] == 1 and evidence["on_failure"] == "revert_all", evidence
    install = next(g for g in evidence["gates"] if g["gate"] == "install")
    assert install["outcome"] == "fail", install
    values = install["values"]
    assert values["total"] == 6 and values["failed"] >= 1, values
    assert values["min_success_ratio"] == 0.9 and values["max_failure_ratio"] == 0.1, values
    reverted = [e["change"] for e in audit if e["action"] == "rollout.reverted"]
    assert len(reverted) == 1, actions
    assert reverted[0]["scope"] == "all", reverted
    assert reverted[0]["reverted"] == 11 and reverted[0]["cancelled"] == 11, reverted


def api_for(cluster: Cluster) -> Api:
    return cluster.api()
