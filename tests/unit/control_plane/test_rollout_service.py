"""The rollout service on a real control plane: plan, create, apply, and operator commands.

Plans are checked on enrolled devices (labels and capabilities as devices
send them) against the real signed release of the tiny model; commands are
checked by driving the rollout with the real driver and simulated reports.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from control_plane.errors import ConflictError, InvalidInputError, StateError
from control_plane.rollouts.engine import Event
from control_plane.store.rollout_records import RolloutRecord, TargetStatus
from tests.unit.control_plane.fleet_support import CAPABILITIES, make_fleet
from tests.unit.control_plane.rollout_support import TFLITE_ONLY, Sim, doc

S = TargetStatus


@pytest.fixture
def sim(tmp_path: Path) -> Sim:
    return Sim(make_fleet(tmp_path))


# -- planning --------------------------------------------------------------------------------


def test_a_plan_sizes_the_cumulative_waves_and_excludes_devices_that_cannot_run_it(
    sim: Sim,
) -> None:
    matching = sim.enroll(10, site="a")
    sim.enroll(2, site="c")  # outside the selector
    tflite = sim.enroll(capabilities=TFLITE_ONLY, site="a")[0]
    old_onnx = sim.enroll(capabilities={**CAPABILITIES, "onnx_opsets": [7, 12]}, site="b")[0]
    waves = [{"percent": 10, "min_devices": 2}, {"percent": 50}, {"percent": 100}]

    planned = sim.fleet.devices.rollouts.plan(
        doc("p", sim.r2, selector="site in (a,b)", waves=waves)
    )

    assert planned.release == sim.r2 and planned.plan.wave_sizes == [2, 3, 5]
    assert sorted(t.device_id for t in planned.plan.targets) == sorted(matching)
    assert [t.wave for t in planned.plan.targets] == [0] * 2 + [1] * 3 + [2] * 5
    assert planned.plan.conflicts == {}
    reasons = {e.device_id: e.reasons for e in planned.plan.excluded}
    assert set(reasons) == {tflite, old_onnx}
    assert any("runs no onnx models" in r for r in reasons[tflite])
    assert any("has no onnxruntime" in r for r in reasons[tflite])
    assert any("opset 17" in r for r in reasons[old_onnx])


def test_stratify_by_gives_every_stratum_its_share_of_every_wave(sim: Sim) -> None:
    sites = {"a": 9, "b": 6, "c": 3}
    for site, count in sites.items():
        sim.enroll(count, site=site)
    sim.enroll(2)  # no site label: a stratum of its own
    waves = [{"percent": 20}, {"percent": 50}, {"percent": 100}]

    planned = sim.fleet.devices.rollouts.plan(doc("s", sim.r2, stratify_by="site", waves=waves))

    targets = planned.plan.targets
    sizes = {**sites, "": 2}
    total = sum(sizes.values())
    reached = 0
    for wave, size in enumerate(planned.plan.wave_sizes):
        reached += size
        seen = Counter(t.stratum for t in targets if t.wave <= wave)
        for stratum, members in sizes.items():
            share = reached * members / total
            assert abs(seen[stratum] - share) <= 1, (wave, stratum, seen, share)
    assert Counter(t.stratum for t in targets) == sizes


def test_the_same_rollout_id_always_orders_the_devices_the_same_way(sim: Sim) -> None:
    sim.enroll(12, site="a")
    rollouts = sim.fleet.devices.rollouts
    document = doc("o", sim.r2, waves=[{"percent": 25}, {"percent": 100}])

    first = rollouts.plan(document, rollout_id="ro-aaaaaaaaaa").plan
    again = rollouts.plan(document, rollout_id="ro-aaaaaaaaaa").plan
    other = rollouts.plan(document, rollout_id="ro-bbbbbbbbbb").plan

    assert first.targets == again.targets
    assert [t.device_id for t in first.targets] != [t.device_id for t in other.targets]
    assert [t.order_key for t in first.targets] == sorted(t.order_key for t in first.targets)


# -- creating --------------------------------------------------------------------------------


def test_create_stores_every_target_with_its_wave_and_audits_the_plan(sim: Sim) -> None:
    devices = sim.enroll(4, runs=sim.r1)
    tflite = sim.enroll(capabilities=TFLITE_ONLY)[0]

    view, plan = sim.fleet.devices.rollouts.create(
        doc("c", sim.r2, waves=[{"count": 1}, {"percent": 100}]), "alice"
    )

    record = view.record
    assert (record.phase, record.release, record.created_by) == ("created", sim.r2, "alice")
    assert view.tally.counts == {0: {S.PENDING: 1, S.EXCLUDED: 1}, 1: {S.PENDING: 3}}
    targets = sim.targets(record.id)
    assert targets[tflite].status is S.EXCLUDED and "onnx" in (targets[tflite].reason or "")
    assert all(targets[d].previous_release == sim.r1 for d in devices)
    ((action, change),) = sim.decisions(record.id)
    assert action == "rollout.create" and change["wave_sizes"] == plan.wave_sizes == [1, 3]
    assert change["excluded"] == 1 and change["release"] == sim.r2


def test_a_rollout_holding_devices_of_another_active_one_is_refused_naming_them(
    sim: Sim,
) -> None:
    site_a = sim.enroll(2, site="a")
    sim.enroll(2, site="b")
    first = sim.create("first", selector="site=a")

    with pytest.raises(ConflictError) as refused:
        sim.create("everything")

    message = str(refused.value)
    assert "2 targeted device(s)" in message and first.id in message
    assert all(device in message for device in site_a)
    assert sim.store.find_rollout("everything") is None
    only_b = sim.create("only-b", selector="site=b")  # no overlap
    sim.fleet.devices.rollouts.command(first.id, "abort", "alice")
    with pytest.raises(ConflictError, match=f"2 targeted .* {only_b.id}"):  # b is still held
        sim.create("everything")


def test_create_refuses_an_empty_target_and_a_taken_name(sim: Sim) -> None:
    sim.enroll(capabilities=TFLITE_ONLY)
    with pytest.raises(InvalidInputError, match="1 matching device"):
        sim.create("nothing")
    sim.enroll()
    sim.create("taken")
    sim.fleet.devices.rollouts.command("taken", "abort", "alice")
    with pytest.raises(ConflictError, match="already exists"):
        sim.create("taken")


# -- apply -----------------------------------------------------------------------------------


def test_apply_is_idempotent_and_only_paused_may_change(sim: Sim) -> None:
    sim.enroll(3, runs=sim.r1)
    rollouts = sim.fleet.devices.rollouts
    document = doc("gitops", sim.r2, waves=[{"count": 1}, {"percent": 100}])

    created, plan = rollouts.apply(document, "ci")
    assert created.result == "created" and plan is not None
    sim.tick()
    again, plan = rollouts.apply(document, "ci")
    assert (again.result, plan, again.view.record.phase) == ("unchanged", None, "progressing")

    paused, _ = rollouts.apply({**document, "spec": {**document["spec"], "paused": True}}, "ci")
    assert paused.result == "paused" and paused.view.record.phase == "paused"
    resumed, _ = rollouts.apply(document, "ci")
    assert resumed.result == "resumed" and resumed.view.record.phase == "progressing"

    changed = {**document, "spec": {**document["spec"], "retries": 2}}
    with pytest.raises(ConflictError, match="different spec"):
        rollouts.apply(changed, "ci")
    assert sim.rollout(created.view.record.id).spec == created.view.record.spec


def test_apply_does_not_resume_a_pause_it_did_not_make(sim: Sim) -> None:
    sim.enroll(2, runs=sim.r1)
    rollouts = sim.fleet.devices.rollouts
    document = doc("gitops", sim.r2, paused=True)
    created, _ = rollouts.apply(document, "ci")
    sim.tick()
    assert sim.phase(created.view.record.id) == "paused"  # created paused
    resumed, _ = rollouts.apply({**document, "spec": {**document["spec"], "paused": False}}, "ci")
    assert resumed.result == "resumed"
    rollouts.command("gitops", "pause", "alice", "investigating")

    again, _ = rollouts.apply({**document, "spec": {**document["spec"], "paused": False}}, "ci")

    assert again.result == "unchanged" and again.view.record.phase == "paused"


# -- commands --------------------------------------------------------------------------------


def test_pause_holds_assignments_and_resume_goes_on(sim: Sim) -> None:
    devices = sim.enroll(4, runs=sim.r1)
    rollout = sim.create("pr", waves=[{"count": 1}, {"percent": 100}])
    rollouts = sim.fleet.devices.rollouts
    sim.tick()
    (first,) = sim.commit_installing(rollout.id)

    view = rollouts.command(rollout.id, "pause", "alice", "lunch")
    sim.tick(10)

    assert view.record.phase == "paused" and view.record.state["reason"] == "lunch"
    assert sim.with_status(rollout.id, S.COMMITTED) == [first]  # settled while paused
    assert len(sim.with_status(rollout.id, S.PENDING)) == 3  # nothing new assigned
    with pytest.raises(StateError, match="cannot pause a rollout that is paused"):
        rollouts.command(rollout.id, "pause", "alice")
    rollouts.command(rollout.id, "resume", "alice")
    sim.tick(10)
    assert sim.with_status(rollout.id, S.INSTALLING) == sorted(set(devices) - {first})
    sim.commit_installing(rollout.id)
    sim.tick(10)
    assert sim.phase(rollout.id) == "completed"
    actions = sim.actions(rollout.id)
    assert actions.index("rollout.paused") < actions.index("rollout.resumed")
    paused = dict(sim.decisions(rollout.id))["rollout.paused"]
    assert paused == {**paused, "by": "alice", "reason": "lunch"}
    with pytest.raises(InvalidInputError, match="unknown command"):
        rollouts.command(rollout.id, "explode", "alice")


def test_an_approval_wave_waits_for_promote(sim: Sim) -> None:
    sim.enroll(3, runs=sim.r1)
    rollout = sim.create("ap", waves=[{"count": 1}, {"percent": 100, "approval": True}])
    sim.tick()
    sim.commit_installing(rollout.id)

    sim.tick(10)
    sim.tick(3600)

    assert sim.phase(rollout.id) == "awaiting_approval"
    assert len(sim.with_status(rollout.id, S.PENDING)) == 2
    assert "wave.awaiting_approval" in sim.actions(rollout.id)
    sim.fleet.devices.rollouts.command(rollout.id, "promote", "bob")
    assert sim.phase(rollout.id) == "progressing"
    sim.tick()
    assert len(sim.with_status(rollout.id, S.INSTALLING)) == 2
    promoted = dict(sim.decisions(rollout.id))["rollout.promoted"]
    assert promoted == {**promoted, "by": "bob", "wave": 1, "from": "awaiting_approval"}


def test_a_dry_run_records_what_it_would_do_and_still_completes(sim: Sim) -> None:
    sim.enroll(4, runs=sim.r1)
    rollout = sim.create("dry", dry_run=True, waves=[{"count": 2}, {"percent": 100}])
    sim.tick()
    bad, good = sim.with_status(rollout.id, S.INSTALLING)
    sim.fail(bad)
    sim.commit(good)

    sim.tick(10)
    sim.commit_installing(rollout.id)
    sim.tick(10)

    assert sim.phase(rollout.id) == "completed"
    assert sim.statuses(rollout.id) == {"committed": 3, "failed": 1}
    would = [(a, c) for a, c in sim.decisions(rollout.id) if a.startswith("dry_run.would_")]
    assert [a for a, _ in would] == ["dry_run.would_pause"]
    change = would[0][1]
    assert change["dry_run"] is True and change["on_failure"] == "pause" and change["wave"] == 0
    install = change["gates"][0]
    assert install["outcome"] == "fail" and install["values"]["failed"] == 1
    assert "wave.failed" not in sim.actions(rollout.id)


def test_a_command_that_loses_a_race_with_the_driver_is_applied_to_the_fresh_record(
    sim: Sim,
) -> None:
    sim.enroll(3, runs=sim.r1)
    rollout = sim.create("race", waves=[{"count": 1}, {"percent": 100}])
    rollouts = sim.fleet.devices.rollouts
    sim.tick()
    real = rollouts.control.apply
    seen: list[int] = []

    def driver_writes_first(record: RolloutRecord, event: Event, **kwargs: Any) -> RolloutRecord:
        if kwargs["actor"] != "alice":  # the driver's own writes
            return real(record, event, **kwargs)
        seen.append(record.revision)
        if len(seen) == 1:  # between the command's read and its write, the driver ticks
            sim.commit_installing(rollout.id)
            sim.tick(1)
        return real(record, event, **kwargs)

    rollouts.control.apply = driver_writes_first  # type: ignore[method-assign]
    view = rollouts.command(rollout.id, "pause", "alice")

    assert len(seen) == 2 and seen[1] > seen[0]
    assert view.record.phase == "paused" and view.record.revision == seen[1] + 1
    assert view.record.state["wave"] == 1  # what the driver wrote is kept


def test_a_command_judged_on_a_stale_phase_is_judged_again(sim: Sim) -> None:
    sim.enroll(2, runs=sim.r1)
    rollout = sim.create("starting")  # created: pause is not allowed yet
    rollouts = sim.fleet.devices.rollouts
    real = rollouts.control.apply

    def driver_starts_it_first(record: RolloutRecord, event: Event, **kwargs: Any) -> Any:
        if kwargs["actor"] == "alice" and record.phase == "created":
            sim.tick()  # the driver starts the rollout between the read and the write
        return real(record, event, **kwargs)

    rollouts.control.apply = driver_starts_it_first  # type: ignore[method-assign]
    view = rollouts.command(rollout.id, "pause", "alice")

    assert view.record.phase == "paused"
