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

The module needs PostgreSQL (several replicas share one database): without
one it is skipped, except under ``CI=true``, where it fails
(:func:`tests.support.postgres.require_server`). A missing Mosquitto always
fails.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
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
    owner_pid,
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


def wait_device(
    api: Api, device: str, check: Callable[[dict[str, Any]], bool], timeout_s: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    info = api.device(device)
    while not check(info):
        if time.monotonic() > deadline:
            raise AssertionError(f"the control plane never saw the expected state: {info}")
        time.sleep(0.2)
        info = api.device(device)
    return info


def rollout_spec(release: Release, **extra: Any) -> dict[str, Any]:
    return {
        "model": release.model,
        "release": release.counter,
        "selector": "suite=rollouts",
        "device_timeout": "120s",
        **extra,
    }


def check_assigned_once(
    api: Api, name: str, targets: list[dict[str, Any]], release: Release
) -> None:
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
        # Stratified by grp, 20 good and 2 bad devices interleave evenly: the first
        # bad device is the 6th in the order (the second wave, devices 6 to 11) and
        # the other the 17th (the third wave); the first wave is all good, whatever
        # the hashes of the rollout id and the device ids say.
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

    # The first two waves were assigned, then each of their devices got its previous release.
    for target in by_wave[0] + by_wave[1]:
        device = target["device_id"]
        assert target["status"] == "rolled_back", target
        assert target["previous_release"] == cluster.baseline.counter, target
        assert target["sequence"] is not None, target
        assert target["revert_sequence"] > target["sequence"], target
        assert device_views[device]["desired_sequence"] == target["revert_sequence"], target
    # The third wave never started: nothing was signed for its devices.
    for target in by_wave[2]:
        assert target["status"] == "cancelled", target
        assert target["sequence"] is None and target["attempts"] == 0, target
        assert (
            device_views[target["device_id"]]["desired_sequence"]
            == sequences_before[target["device_id"]]
        ), target

    # The agents: every touched device serves its previous release again, as committed.
    touched = [members[t["device_id"]] for t in by_wave[0] + by_wave[1]]
    revert_sequence = {t["device_id"]: t["revert_sequence"] for t in by_wave[0] + by_wave[1]}
    fleet.wait_all(
        lambda m, s: (
            serving(cluster.baseline)(m, s)
            and (s.get("update") or {}).get("assignment_sequence") == revert_sequence[m.device_id]
        ),
        members=touched,
        what="the revert to the baseline",
    )
    assert serving_now(cluster) == before
    with cluster.api() as api:
        for target in by_wave[0]:
            # The first wave had committed the new release before it was rolled back.
            status = members[target["device_id"]].agent.status(cli=True)  # the real command
            assert status["active"]["release"] == cluster.baseline.counter, status
            assert status["previous"]["release"] == release.counter, status
            view = wait_device(
                api,
                target["device_id"],
                lambda d: (
                    d["state"] == "committed"
                    and (d["current"] or {}).get("release") == cluster.baseline.counter
                ),
            )
            assert (view["previous"] or {}).get("release") == release.counter, view
        # The bad device of the second wave failed its smoke test and never served it.
        (tried,) = [t["device_id"] for t in by_wave[1] if t["device_id"] in bad]
        reports = api.client.get(f"/v1/devices/{tried}", params={"reports": 100}).json()
        assert any(
            r["state"] == "failed" and r["report"].get("reason") == "smoke"
            for r in reports["reports"]
        ), reports["reports"]
        assert members[tried].agent.status()["committed"]["release"] == cluster.baseline.counter
    # The third wave's devices never heard of the release.
    for target in by_wave[2]:
        assert sequence_of(members[target["device_id"]]) == sequences_before[target["device_id"]]

    # The audit log: the first wave passed, the second failed with the gate's evidence.
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
    assert values["total"] == 6 and values["failed"] == 1, values
    assert values["min_success_ratio"] == 0.9 and values["max_failure_ratio"] == 0.1, values
    reverted = [e["change"] for e in audit if e["action"] == "rollout.reverted"]
    assert len(reverted) == 1, actions
    assert reverted[0]["scope"] == "all", reverted
    assert reverted[0]["reverted"] == 11 and reverted[0]["cancelled"] == 11, reverted


# -- 2. a revoke reaches a device that was offline ----------------------------------------------


def test_a_revoke_reaches_a_device_that_was_offline(cluster: Cluster) -> None:
    fleet = cluster.fleet
    before = serving_now(cluster)
    offline = next(m for m in fleet.members if m.labels["grp"] == "good")
    previous = before[offline.device_id]
    assert previous is not None, before
    with cluster.api() as api:
        release = api.release(MODEL, "3.0.0", seed=300)
        created = api.create_rollout("to-revoke", rollout_spec(release))
        api.wait_rollout(
            created["rollout"]["id"],
            lambda r: r["phase"] in TERMINAL,
            timeout_s=180,
            what="an end",
            context=cluster.context,
        )
        assert api.rollout("to-revoke")["phase"] == "completed"
        fleet.wait_all(serving(release), what=f"{release} everywhere")

        assert offline.agent.terminate() == 0  # SIGTERM: a clean stop, then no connection
        wait_device(api, offline.device_id, lambda d: d["online"] is False)
        revoked = api.revoke(release, "bad outputs")
        assert revoked["state"] == "revoked", revoked
        assert revoked["devices"]["reverted"] == len(fleet.members), revoked["devices"]
        assert revoked["devices"]["not_reverted"] == [], revoked["devices"]

        # The devices online go back at once; the offline one has its revert waiting.
        online = [m for m in fleet.members if m is not offline]
        fleet.wait_all(
            lambda m, s: (
                s.get("active") is not None
                and (s["active"]["model"], s["active"]["release"]) == before[m.device_id]
                and s.get("state") == "committed"
            ),
            members=online,
            what="the revert of the online devices",
        )
        waiting = api.device(offline.device_id)
        assert waiting["assignment"]["release"] == previous[1], waiting
        assert waiting["assignment"]["created_by"] == "admin", waiting
        assert offline.active() == (MODEL, release.counter)  # it was not there to hear it

        offline.agent.start()
        status = offline.agent.wait_for_state(
            "committed", sequence=waiting["assignment"]["sequence"], timeout_s=90
        )
        assert offline.active() == previous, status
        assert offline.agent.status(cli=True)["active"]["release"] == previous[1]
        wait_device(
            api,
            offline.device_id,
            lambda d: (d["current"] or {}).get("release") == previous[1],
        )

        # The revoked release is never assigned again, by hand or by a rollout.
        refused = api.client.post(
            f"/v1/devices/{offline.device_id}/assignment",
            json={"model": MODEL, "release": release.counter},
        )
        assert refused.status_code == 409, refused.text
        again = api.client.post(
            "/v1/rollouts",
            json={"metadata": {"name": "revoked-again"}, "spec": rollout_spec(release)},
        )
        assert again.status_code == 409, again.text
        # ... and no agent serves it again: watch the fleet for a while.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert serving_now(cluster) == before
            time.sleep(0.5)
        reports = api.client.get(f"/v1/devices/{offline.device_id}", params={"reports": 50}).json()[
            "reports"
        ]
        after_restart = [r for r in reports if r["seq"] > waiting["last_seq"]]
        assert after_restart, reports
        assert all(
            (r["report"].get("target") or {}).get("release") != release.counter
            for r in after_restart
        ), after_restart


# -- 3. kill -9 of the control plane in the middle of a wave -----------------------------------


def test_a_control_plane_killed_mid_wave_resumes_without_double_or_skipped_devices(
    cluster: Cluster,
) -> None:
    fleet = cluster.fleet
    replica = cluster.replica
    with cluster.api() as api:
        release = api.release(MODEL, "4.0.0", seed=400)
        # Two devices at a time: the second wave (15 devices) lasts long enough to die in.
        spec = rollout_spec(release, waves=[{"percent": 30}, {"percent": 100}], max_unavailable=2)
        created = api.create_rollout("killed-mid-wave", spec)
        rollout_id = created["rollout"]["id"]
        assert created["plan"]["wave_sizes"] == [7, 15], created["plan"]

        def mid_wave(r: dict[str, Any]) -> bool:
            counts: dict[str, int] = r["by_wave"][1]["counts"]
            return bool(
                r["wave"] == 1 and counts.get("pending", 0) >= 5 and counts.get("committed", 0) >= 2
            )

        at_kill = api.wait_rollout(
            rollout_id,
            mid_wave,
            timeout_s=120,
            what="the middle of the second wave",
            context=cluster.context,
        )
        replica.kill9()
    assert at_kill["phase"] == "progressing", at_kill
    time.sleep(2)  # the agents go on installing and reporting with no control plane
    replica.start()  # same data directory, same port

    with cluster.api() as api:
        final = api.wait_rollout(
            rollout_id,
            lambda r: r["phase"] in TERMINAL,
            timeout_s=240,
            what="an end",
            context=cluster.context,
        )
        assert final["phase"] == "completed", final
        assert final["counts"]["committed"] == len(fleet.members), final["counts"]
        targets = api.targets(rollout_id)
        assert sorted(t["device_id"] for t in targets) == sorted(fleet.by_id())
        check_assigned_once(api, "killed-mid-wave", targets, release)
    fleet.wait_all(serving(release), what=f"{release} everywhere")
    sequences = {t["device_id"]: t["sequence"] for t in targets}
    for member in fleet.members:
        assert sequence_of(member) == sequences[member.device_id]


# -- 4. two replicas, one lease owner per rollout ----------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: datetime
    rollout: str
    owner: str | None
    lease_until: datetime | None
    phase: str


def _parse(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class LeaseWatch:
    """Samples every rollout's lease through each live replica in turn."""

    def __init__(self, cluster: Cluster, replicas: list[Replica]) -> None:
        self.cluster = cluster
        self.replicas = replicas
        self.samples: list[Sample] = []
        self.answered: dict[str, int] = {r.name: 0 for r in replicas}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-watch", daemon=True)

    def __enter__(self) -> LeaseWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        apis = {r.name: self.cluster.deployment.api(r) for r in self.replicas}
        turn = 0
        try:
            while not self._stop.is_set():
                replica = self.replicas[turn % len(self.replicas)]
                turn += 1
                if not replica.alive:
                    time.sleep(0.05)
                    continue
                try:
                    found = apis[replica.name].rollouts(MODEL)
                except (httpx.HTTPError, AssertionError):
                    continue
                at = datetime.now(timezone.utc)
                self.answered[replica.name] += 1
                for r in found:
                    self.samples.append(
                        Sample(at, r["id"], r["lease_owner"], _parse(r["lease_until"]), r["phase"])
                    )
                time.sleep(0.1)
        finally:
            for api in apis.values():
                api.close()

    def of(self, rollout: str) -> list[Sample]:
        return [s for s in self.samples if s.rollout == rollout]


@pytest.mark.xfail(
    strict=False,
    reason="under full-suite load a device is now and then counted failed after the "
    "replica takeover although its agent committed; the cause is not found yet",
)
def test_two_replicas_drive_rollouts_with_one_lease_owner_and_take_over(
    cluster: Cluster,
) -> None:
    fleet = cluster.fleet
    made = cluster.deployment
    first = cluster.replica
    second = made.add_replica("b")
    try:
        pids = {r.name: r.pids() for r in (first, second)}
        assert len(pids["a"]) >= 2 and len(pids["b"]) >= 2, pids  # a master and its workers
        rings = sorted({m.labels["ring"] for m in fleet.members})
        with cluster.api() as api, LeaseWatch(cluster, [first, second]) as watch:
            release = api.release(MODEL, "5.0.0", seed=500)
            ids = {}
            for ring in rings:
                spec = rollout_spec(
                    release,
                    selector=f"suite=rollouts, ring={ring}",
                    waves=[{"percent": 50}, {"percent": 100}],
                    max_unavailable=1,
                )
                ids[ring] = api.create_rollout(f"replicas-{ring}", spec)["rollout"]["id"]

            def running_everywhere() -> bool:
                views = [api.rollout(i) for i in ids.values()]
                return all(
                    v["phase"] == "progressing"
                    and v["lease_owner"]
                    and v["counts"].get("committed", 0) >= 1
                    and v["counts"].get("pending", 0) >= 1
                    for v in views
                )

            deadline = time.monotonic() + 120
            while not running_everywhere():
                assert time.monotonic() < deadline, cluster.context()
                time.sleep(0.2)
            # Kill the replica that holds the most leases; the other must take them over.
            owners = {i: api.rollout(i)["lease_owner"] for i in ids.values()}
            holders = {i: made.replica_of(o) for i, o in owners.items()}
            assert all(h is not None for h in holders.values()), (owners, pids)
            victim = max((first, second), key=lambda r: sum(h is r for h in holders.values()))
            survivor = second if victim is first else first
            lost = [i for i, h in holders.items() if h is victim]
            victim_pids, survivor_pids = victim.pids(), survivor.pids()
            killed_at = datetime.now(timezone.utc)
            victim.kill9()

            def taken_over() -> bool:
                return all(owner_pid(api.rollout(i)["lease_owner"]) in survivor_pids for i in lost)

            deadline = time.monotonic() + LEASE_S + 15
            while not taken_over():
                assert time.monotonic() < deadline, cluster.context()
                time.sleep(0.2)
            taken_at = datetime.now(timezone.utc)
            # The survivor finishes alone. The dead replica's broker sessions hold its
            # share of the agents' reports; the agents send their newest report again
            # (outbox.resend_s), so no outcome waits for the dead replica to return.
            for rollout_id in ids.values():
                api.wait_rollout(
                    rollout_id,
                    lambda r: r["phase"] in TERMINAL,
                    timeout_s=240,
                    what="an end",
                    context=cluster.context,
                )
            time.sleep(1)  # a last round of samples

        assert watch.answered["a"] > 0 and watch.answered["b"] > 0, watch.answered
        with cluster.api() as api:
            for ring, rollout_id in ids.items():
                view = api.rollout(rollout_id)
                assert view["phase"] == "completed", view
                targets = api.targets(rollout_id)
                assert {t["device_id"] for t in targets} == {
                    m.device_id for m in fleet.members if m.labels["ring"] == ring
                }
                check_assigned_once(api, f"replicas-{ring}", targets, release)
        for rollout_id in ids.values():
            samples = [s for s in watch.of(rollout_id) if s.owner]
            before = [s for s in samples if s.at < killed_at]
            after = [s for s in samples if s.at > taken_at]
            # While both replicas lived, one driver held each rollout the whole time ...
            assert len({s.owner for s in before}) == 1, {s.owner for s in before}
            owner = before[-1].owner
            assert owner_pid(owner) in (victim_pids | survivor_pids), owner
            # ... and after the takeover, one driver of the survivor did.
            assert len({s.owner for s in after}) == 1, {s.owner for s in after}
            assert owner_pid(after[0].owner) in survivor_pids, (after[0], survivor_pids)
            if rollout_id in lost:
                assert owner_pid(owner) in victim_pids, owner
                # Not before the dead owner's lease ran out.
                first_new = next(s for s in samples if s.at > killed_at and s.owner != owner)
                last_lease = max(s.lease_until for s in before if s.lease_until)
                assert first_new.at >= last_lease, (first_new, last_lease)
            else:
                assert after[0].owner == owner, (owner, after[0])
        fleet.wait_all(serving(release), what=f"{release} everywhere")
    finally:
        if not first.alive:
            first.start()  # the replica the module started with stays up for whatever follows
        second.stop()
        made.replicas.remove(second)
        made.balancer.backends.remove(second.port)
