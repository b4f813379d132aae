"""Fleet revert on a real control plane: an operator's rollback, an interrupted revert, revoke.

A reverted device's new desired state is checked as the device would check
it (:func:`tests.unit.control_plane.test_director.accepted`): signed by the
director, for the release it ran before, listing the revoked hashes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.errors import StateError
from control_plane.rollouts.revert import FleetRevert
from control_plane.store.rollout_records import TargetStatus
from fleetcore.envelope import Envelope
from fleetcore.protocol import DesiredState
from tests.unit.control_plane.fleet_support import make_fleet
from tests.unit.control_plane.rollout_support import Sim, doc
from tests.unit.control_plane.test_director import accepted

S = TargetStatus


@pytest.fixture
def sim(tmp_path: Path) -> Sim:
    return Sim(make_fleet(tmp_path))


def completed_rollout(sim: Sim, devices: list[str]) -> str:
    rollout = sim.create("done", waves=[{"count": 1}, {"percent": 100}])
    for _ in range(3):
        sim.tick(1)
        sim.commit_installing(rollout.id)
    sim.tick(1)
    assert sim.phase(rollout.id) == "completed"
    assert sim.with_status(rollout.id, S.COMMITTED) == sorted(devices)
    return rollout.id


def test_rollback_of_a_completed_rollout_reverts_every_device(sim: Sim) -> None:
    devices = sim.enroll(3, runs=sim.r1)
    rollout_id = completed_rollout(sim, devices)

    view = sim.fleet.devices.rollouts.command(rollout_id, "rollback", "alice", "bad outputs")

    assert view.record.phase == "rolled_back" and view.record.state["reason"] == "bad outputs"
    assert "revert" not in view.record.state  # the revert finished
    for device, target in sim.targets(rollout_id).items():
        assert target.status is S.ROLLED_BACK and target.revert_sequence == 2
        assert sim.desired_release(device) == (2, sim.r1)
        assert accepted(sim.fleet, device) == 2
    decisions = dict(sim.decisions(rollout_id))
    assert decisions["rollout.rolled_back"] == {**decisions["rollout.rolled_back"], "by": "alice"}
    reverted = decisions["rollout.reverted"]
    assert (reverted["scope"], reverted["reverted"], reverted["not_reverted_count"]) == (
        "all",
        3,
        0,
    )
    with pytest.raises(StateError, match="rolled_back"):
        sim.fleet.devices.rollouts.command(rollout_id, "rollback", "alice")


def test_a_revert_cut_short_is_finished_by_the_next_tick(
    sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    devices = sim.enroll(2, runs=sim.r1)
    rollout_id = completed_rollout(sim, devices)

    def killed(*_: object) -> None:
        raise RuntimeError("killed")

    monkeypatch.setattr(FleetRevert, "revert_targets", killed)
    with pytest.raises(RuntimeError):
        sim.fleet.devices.rollouts.command(rollout_id, "rollback", "alice")
    written = sim.rollout(rollout_id)
    assert written.phase == "reverting" and written.state["revert"]["scope"] == "all"
    assert sim.statuses(rollout_id) == {"committed": 2}
    monkeypatch.undo()

    sim.tick(1)

    assert sim.phase(rollout_id) == "rolled_back"
    assert sim.statuses(rollout_id) == {"rolled_back": 2}
    assert all(sim.desired_release(d) == (2, sim.r1) for d in devices)
    sim.tick(1)  # nothing left to do: nobody is reverted twice
    assert all(sim.desired_release(d) == (2, sim.r1) for d in devices)


def assigned_to(sim: Sim, device: str, release: int) -> int:
    signed = sim.fleet.devices.director.assign(device, "tiny", "alice", release=release)
    return signed.sequence


def test_revoke_moves_every_device_desiring_the_release_back(sim: Sim) -> None:
    r3 = sim.fleet.release("3", seed=3)
    waiting, committed, fresh, on_r1 = sim.enroll(4)
    for device in (waiting, committed, on_r1):
        assigned_to(sim, device, sim.r1)
        sim.commit(device)
    for device in (waiting, committed, fresh):
        assigned_to(sim, device, sim.r2)
    sim.commit(committed)  # runs release 2 now, release 1 before it
    others = sim.enroll(2, runs=sim.r1, site="other")
    rollout = sim.fleet.devices.rollouts.create(doc("r3", r3, selector="site=other"), "alice")
    rollout_id = rollout[0].record.id
    sim.tick(1)
    before = {d: sim.desired_release(d) for d in (on_r1, *others)}

    revoked, summary = sim.fleet.devices.revert.revoke("tiny", sim.r2, "wrong outputs", "alice")

    assert revoked.state.value == "revoked"
    assert summary.reverted == 2
    assert summary.not_reverted == [{"device": fresh, "reason": "it ran no other release of tiny"}]
    version = sim.store.get_version_by_id(revoked.version_id)
    assert version is not None
    for device in (waiting, committed):
        sequence, release = sim.desired_release(device) or (0, 0)
        assert release == sim.r1 and accepted(sim.fleet, device) == sequence
        found = sim.fleet.devices.director.desired(device)
        assert found is not None
        signed = Envelope.from_bytes(DesiredState.decode(found[1]).assignment).signed
        assert version.artifact_sha256 in signed["revoked"]
    assert sim.desired_release(fresh) == (1, sim.r2)  # nothing to go back to: listed, left
    assert {d: sim.desired_release(d) for d in (on_r1, *others)} == before
    assert sim.phase(rollout_id) == "progressing"  # another release's rollout goes on
    entry = sim.store.list_audit(object_type="release", limit=1)[0]
    assert entry.action == "release.revert_devices" and entry.change["reverted"] == 2
    with pytest.raises(StateError, match="revoked"):
        sim.fleet.devices.director.assign(fresh, "tiny", "alice", release=sim.r2)
    with pytest.raises(StateError, match="revoked"):
        sim.fleet.devices.rollouts.create(doc("again", sim.r2), "alice")


def test_revoking_the_release_of_a_rollout_aborts_it_and_assigns_nobody_else(sim: Sim) -> None:
    sim.enroll(4, runs=sim.r1)
    rollout = sim.create("doomed", waves=[{"count": 1}, {"percent": 100}])
    sim.tick()
    (first,) = sim.with_status(rollout.id, S.INSTALLING)

    sim.fleet.devices.rollouts.revoke("tiny", sim.r2, "wrong outputs", "alice")
    aborted = sim.fleet.devices.rollouts.view(rollout.id).record
    assert aborted.phase == "aborted" and "revoked" in aborted.state["reason"]
    sim.commit(first)  # the device acts on its newest assignment: release 1 again
    sim.tick(10)

    assert sim.desired_release(first) == (2, sim.r1)
    cancelled = sim.with_status(rollout.id, S.CANCELLED)
    assert len(cancelled) == 3  # never assigned now
    assert all(sim.desired_release(d) is None for d in cancelled)
    sim.tick(3600)
    assert sim.statuses(rollout.id) == {"cancelled": 3, "installing": 1}
