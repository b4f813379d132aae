"""The rollout driver on a real control plane: waves, gates, timeouts, limits, leases, crashes.

Devices are simulated by the status reports an agent would post; the clock
is moved by the test, and :meth:`RolloutDriver.tick` is called where the
control plane's background task would call it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from control_plane.errors import SigningError
from control_plane.rollouts.driver import DriverSettings, RolloutDriver
from control_plane.store.rollout_records import TargetStatus
from control_plane.store.sql import SqlStore
from fleetcore.protocol import UpdateState
from tests.unit.control_plane.fleet_support import make_fleet
from tests.unit.control_plane.rollout_support import (
    TFLITE_ONLY,
    Sim,
    assert_install_evidence,
)
from tests.unit.control_plane.test_director import accepted

S = TargetStatus
THREE_WAVES = [{"percent": 10}, {"percent": 50}, {"percent": 100}]


@pytest.fixture
def sim(tmp_path: Path) -> Sim:
    return Sim(make_fleet(tmp_path))


def test_a_rollout_goes_through_three_waves_to_completed(sim: Sim) -> None:
    devices = sim.enroll(10, runs=sim.r1)
    rollout = sim.create("three", waves=THREE_WAVES)
    assigned_per_tick = []
    for _ in range(3):
        sim.tick(10)
        assigned_per_tick.append(len(sim.commit_installing(rollout.id)))
    sim.tick(10)

    assert assigned_per_tick == [1, 4, 5]
    assert sim.phase(rollout.id) == "completed"
    assert sim.statuses(rollout.id) == {"committed": 10}
    for device in devices:
        target = sim.targets(rollout.id)[device]
        assert (target.attempts, target.previous_release) == (1, sim.r1)
        assert sim.desired_release(device) == (target.sequence, sim.r2) == (1, sim.r2)
        assert accepted(sim.fleet, device) == 1
        assert sim.device(device).installed("current") == sim.installed(sim.r2)
    decisions = sim.decisions(rollout.id)
    actions = [a for a, _ in decisions]
    assert actions == [
        "rollout.create",
        *("wave.opened", "wave.installed", "wave.passed") * 3,
        "rollout.completed",
    ]
    for action, change in decisions:
        if action == "wave.installed":
            counts = change["counts"]
            assert counts["committed"] == counts["total"] > 0 and "soak_s" in change
        if action == "wave.passed":
            assert_install_evidence(change)
            assert change["gates"][0]["values"]["success_ratio"] == 1.0


def wave_members(sim: Sim, rollout_id: str) -> dict[int, list[str]]:
    waves: dict[int, list[str]] = {}
    for target in sim.store.list_targets(rollout_id):
        waves.setdefault(target.wave, []).append(target.device_id)
    return waves


@pytest.mark.parametrize("on_failure", ["pause", "revert_wave", "revert_all"])
def test_a_failed_install_gate_acts_by_on_failure(sim: Sim, on_failure: str) -> None:
    sim.enroll(6)
    rollout = sim.create(
        "gate", on_failure=on_failure, waves=[{"count": 2}, {"count": 4}, {"percent": 100}]
    )
    waves = wave_members(sim, rollout.id)
    first, (bad, fresh), later = waves[0], waves[1], waves[2]
    for device in (*first, bad, *later):  # ``fresh`` runs no release of tiny yet
        sim.runs(device, sim.r1)
    sim.tick()
    sim.commit_installing(rollout.id)
    sim.tick(10)  # wave 1 opens
    sim.fail(bad)
    sim.commit(fresh)

    sim.tick(10)

    targets = sim.targets(rollout.id)
    failed = [(a, c) for a, c in sim.decisions(rollout.id) if a == "wave.failed"]
    assert len(failed) == 1
    assert_install_evidence(failed[0][1])
    assert failed[0][1]["on_failure"] == on_failure and failed[0][1]["wave"] == 1
    assert failed[0][1]["gates"][0]["values"]["failed"] == 1
    if on_failure == "pause":
        assert targets[bad].reason == "smoke_test"
        assert sim.phase(rollout.id) == "paused"
        assert sim.rollout(rollout.id).state["reason"] == "install gate failed"
        assert {d: targets[d].status for d in (bad, fresh)} == {bad: S.FAILED, fresh: S.COMMITTED}
        assert all(targets[d].status is S.PENDING for d in later)
        return
    assert sim.phase(rollout.id) == "failed"
    reverted = (*first, bad) if on_failure == "revert_all" else (bad,)
    for device in reverted:
        target = targets[device]
        assert target.status is S.ROLLED_BACK, (device, target)
        assert sim.desired_release(device) == (target.revert_sequence, sim.r1)
        assert accepted(sim.fleet, device) == target.revert_sequence
    assert targets[fresh].status is S.NO_PREVIOUS and "no earlier release" in (
        targets[fresh].reason or ""
    )
    assert sim.desired_release(fresh) == (targets[fresh].sequence, sim.r2)  # left as it is
    summary = dict(sim.decisions(rollout.id))["rollout.reverted"]
    assert summary["reverted"] == len(reverted) and summary["not_reverted_count"] == 1
    if on_failure == "revert_all":
        assert all(targets[d].status is S.CANCELLED for d in later)
        assert all(sim.desired_release(d) is None for d in later)  # never assigned
    else:
        assert all(targets[d].status is S.COMMITTED for d in first)  # earlier waves stay


# -- per-device timeout and retries ------------------------------------------------------------


def test_a_silent_device_times_out_after_its_retries(sim: Sim) -> None:
    (device,) = sim.enroll(runs=sim.r1)
    rollout = sim.create("timeout", device_timeout="60s", retries=1)
    sim.tick()
    sim.tick(60)  # not past the timeout yet
    assert sim.targets(rollout.id)[device].attempts == 1

    sim.tick(1)

    retried = sim.targets(rollout.id)[device]
    assert (retried.status, retried.attempts, retried.sequence) == (S.INSTALLING, 2, 2)
    assert sim.desired_release(device) == (2, sim.r2) and accepted(sim.fleet, device) == 2
    sim.tick(61)
    failed = sim.targets(rollout.id)[device]
    assert (failed.status, failed.attempts) == (S.FAILED, 2)
    assert failed.reason is not None and failed.reason.startswith("timeout")
    assert sim.desired_release(device) == (2, sim.r2)  # no third attempt
    assert sim.phase(rollout.id) == "paused"


def test_a_failed_device_is_retried_and_only_its_newest_assignment_counts(sim: Sim) -> None:
    (device,) = sim.enroll(runs=sim.r1)
    rollout = sim.create("retry", retries=2)
    sim.tick()
    sim.fail(device)
    sim.tick(1)
    assert sim.targets(rollout.id)[device].sequence == 2
    r2 = sim.installed(sim.r2)
    sim.report(device, UpdateState.COMMITTED, target=r2, active=r2, assignment_sequence=1)
    sim.tick(1)
    assert sim.targets(rollout.id)[device].status is S.INSTALLING  # about assignment 1: ignored

    sim.commit(device)
    sim.tick(1)

    done = sim.targets(rollout.id)[device]
    assert (done.status, done.attempts, done.sequence) == (S.COMMITTED, 2, 2)
    assert sim.phase(rollout.id) == "completed"


# -- late joiners ------------------------------------------------------------------------------


def test_devices_that_come_to_match_join_the_current_wave(sim: Sim) -> None:
    sim.enroll(2, runs=sim.r1, site="a")
    rollout = sim.create("late", selector="site=a", waves=[{"count": 1}, {"percent": 100}])
    sim.tick()
    (joiner,) = sim.enroll(runs=sim.r1, site="a")
    (tflite,) = sim.enroll(capabilities=TFLITE_ONLY, site="a")
    sim.enroll(site="b")
    sim.tick(1)  # joins are looked for every few seconds, not on every tick
    assert joiner not in sim.targets(rollout.id)

    sim.tick(5)

    targets = sim.targets(rollout.id)
    assert (targets[joiner].wave, targets[joiner].status) == (0, S.INSTALLING)
    assert targets[joiner].previous_release == sim.r1
    assert sim.desired_release(joiner) == (1, sim.r2)
    assert targets[tflite].status is S.EXCLUDED and "onnx" in (targets[tflite].reason or "")
    assert len(targets) == 4  # the site=b device is not a target
    joined = dict(sim.decisions(rollout.id))["rollout.devices_joined"]
    assert joined["wave"] == 0 and joined["count"] == 2 and joiner in joined["devices"]
    for _ in range(2):
        sim.commit_installing(rollout.id)
        sim.tick(1)
    assert sim.phase(rollout.id) == "completed"
    assert sim.statuses(rollout.id) == {"committed": 3, "excluded": 1}


# -- limits ------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_unavailable", [2, "40%"])
def test_max_unavailable_caps_the_devices_installing_at_once(
    sim: Sim, max_unavailable: Any
) -> None:
    sim.enroll(5, runs=sim.r1)
    rollout = sim.create("cap", max_unavailable=max_unavailable)
    installing = []
    for _ in range(4):
        sim.tick(10)
        now = sim.with_status(rollout.id, S.INSTALLING)
        installing.append(len(now))
        sim.commit(now[0])
    sim.tick(10)

    assert installing == [2, 2, 2, 2]
    assert sim.statuses(rollout.id) == {"committed": 4, "installing": 1}


def test_rate_per_minute_limits_assignments_per_ten_second_window(sim: Sim) -> None:
    sim.enroll(5, runs=sim.r1)
    rollout = sim.create("rate", rate_per_minute=12)  # 2 per 10 s
    assigned = []
    for seconds in (0, 5, 5, 1, 10, 11):
        sim.tick(seconds)
        assigned.append(len(sim.with_status(rollout.id, S.INSTALLING)))

    assert assigned == [2, 2, 2, 4, 4, 5]


# -- crashes and replicas ----------------------------------------------------------------------


def assert_assignments_match_targets(sim: Sim, rollout_id: str) -> None:
    """A target is installing exactly when its device holds the rollout's assignment."""
    for device, target in sim.targets(rollout_id).items():
        desired = sim.desired_release(device)
        if target.status is S.INSTALLING:
            assert desired == (target.sequence, sim.r2), (device, target, desired)
        else:
            assert desired is None and target.sequence is None, (device, target, desired)


@pytest.mark.parametrize("where", ["signing", "marking"])
def test_a_crash_in_the_middle_of_a_batch_leaves_no_device_half_assigned(
    sim: Sim, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    sim.enroll(5, runs=sim.r1)
    rollout = sim.create("crash")
    calls = []

    def crash_on_the_third(real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("killed")
            return real(*args, **kwargs)

        return call

    if where == "signing":  # before the assignment is stored
        director = sim.fleet.devices.director
        monkeypatch.setattr(director, "assign_in", crash_on_the_third(director.assign_in))
    else:  # after it is stored, before its target is marked
        monkeypatch.setattr(SqlStore, "mark_assigned", crash_on_the_third(SqlStore.mark_assigned))

    sim.tick()

    assert len(calls) == 3
    assert sim.statuses(rollout.id) == {"pending": 5}
    assert_assignments_match_targets(sim, rollout.id)
    monkeypatch.undo()
    sim.tick(1)
    assert sim.statuses(rollout.id) == {"installing": 5}
    assert_assignments_match_targets(sim, rollout.id)
    assert {sim.desired_release(d) for d in sim.targets(rollout.id)} == {(1, sim.r2)}


def test_a_device_the_director_refuses_is_excluded_and_the_others_assigned(
    sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    devices = sim.enroll(4, runs=sim.r1)
    rollout = sim.create("refused")
    director = sim.fleet.devices.director
    real = director.assign_in

    def refuse_one(tx: Any, device: Any, *args: Any, **kwargs: Any) -> Any:
        if device.id == devices[2]:
            raise SigningError("the director key is unavailable")
        return real(tx, device, *args, **kwargs)

    monkeypatch.setattr(director, "assign_in", refuse_one)
    sim.tick()

    refused = sim.targets(rollout.id)[devices[2]]
    assert refused.status is S.EXCLUDED and refused.reason == "the director key is unavailable"
    assert sim.statuses(rollout.id) == {"installing": 3, "excluded": 1}
    assert_assignments_match_targets(sim, rollout.id)


def test_two_drivers_never_drive_one_rollout_at_once_and_one_takes_over(sim: Sim) -> None:
    devices = sim.enroll(4, runs=sim.r1)
    rollout = sim.create("leased", max_unavailable=1)
    a = sim.fleet.devices.driver
    lease_s = sim.fleet.services.settings.rollout_lease_s
    b = RolloutDriver(a.store, a.director, a.control, a.clock, DriverSettings(lease_s=lease_s))
    clock = sim.fleet.clock

    def step(seconds: float, driver: RolloutDriver) -> tuple[int, int]:
        clock.advance(seconds=seconds)
        other = b if driver is a else a
        driven = (driver.tick(), other.tick())
        sim.commit_installing(rollout.id)
        return driven

    assert step(0, a) == (1, 0)
    assert step(lease_s / 3, b) == (0, 1)  # a's lease is live: b waits, a goes on
    assert sim.rollout(rollout.id).lease_owner == a.owner
    assert step(lease_s + 1, b) == (1, 0)  # a stopped ticking: b takes over, a waits
    assert step(1, b) == (1, 0)
    assert step(1, b) == (1, 0)

    assert sim.phase(rollout.id) == "completed"
    assert sim.rollout(rollout.id).lease_owner == b.owner
    for device in devices:
        assert sim.desired_release(device) == (1, sim.r2)
        assigns = sim.store.list_audit(object_id=device)
        assert [e.action for e in assigns].count("device.assign") == 1
