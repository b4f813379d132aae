"""Crash at every state (right after it was persisted), restart, and converge.

The rig's pause hook raises :class:`Crash` (a BaseException nothing in the
agent catches) the moment a state has been written, which is exactly where
``EDGEFLEET_AGENT_PAUSE_AT`` lets a real process be ``kill -9``ed. A new
updater is then built on the same files, as after a restart.
"""

from __future__ import annotations

import pytest

from agent import updater as updater_module
from agent.errors import TransportError
from agent.host import Health
from agent.slots import blob_path
from agent.workflow import IN_PROGRESS
from fleetcore.protocol import UpdateState as S
from tests.unit.agent.rig import Crash, Rig


def _crash(rig: Rig, document: bytes, state: S) -> None:
    rig.crash_at = state
    with pytest.raises(Crash):
        rig.handle(document)


def _assert_consistent(rig: Rig) -> None:
    seqs = [r.seq for r in rig.reports()]
    assert seqs == list(range(1, len(seqs) + 1)), "report seq must be gapless and never repeat"


@pytest.mark.parametrize("state", [*IN_PROGRESS, S.COMMITTED])
def test_crash_at_each_state_of_a_good_update_resumes_to_commit(rig: Rig, state: S) -> None:
    rig.start()
    m1, m2 = rig.release(1), rig.release(2)
    rig.handle(rig.desired(m1))
    _crash(rig, rig.desired(m2), state)
    assert rig.state == state
    updater = rig.restart()
    updater.drive()
    assert rig.state == S.COMMITTED, rig.dump()
    assert rig.active_sha() == m2.artifact.sha256
    assert rig.host.active is not None and rig.host.active.sha256 == m2.artifact.sha256
    assert [r.state for r in rig.reports()].count(S.COMMITTED) == 2
    assert updater.journal.update is not None and updater.journal.update.done
    assert rig.stored() == {m1.artifact.sha256, m2.artifact.sha256}
    _assert_consistent(rig)


@pytest.mark.parametrize("state", [S.SMOKE_TEST, S.FAILED])
def test_crash_around_a_failing_smoke_test_fails_once(rig: Rig, state: S) -> None:
    rig.start()
    m1 = rig.release(1)
    rig.handle(rig.desired(m1))
    _crash(rig, rig.desired(rig.failing_smoke(rig.release(2))), state)
    rig.restart().drive()
    assert rig.state == S.FAILED
    assert [r.state for r in rig.reports()].count(S.FAILED) == 1
    assert rig.active_sha() == m1.artifact.sha256
    assert rig.stored() == {m1.artifact.sha256}
    _assert_consistent(rig)


@pytest.mark.parametrize("state", [S.PROBATION, S.REVERTED])
def test_crash_around_a_revert_restores_the_committed_model(rig: Rig, state: S) -> None:
    rig.start()
    m1, m2 = rig.release(1), rig.release(2)
    rig.handle(rig.desired(m1))
    rig.host.health_value = Health(inferences=50, errors=50)
    _crash(rig, rig.desired(m2), state)
    rig.restart().drive()
    assert rig.state == S.REVERTED, rig.dump()
    assert rig.active_sha() == m1.artifact.sha256
    assert rig.host.active is not None and rig.host.active.sha256 == m1.artifact.sha256
    assert not blob_path(rig.data_dir, m2.artifact.sha256).exists()
    _assert_consistent(rig)


def test_a_revert_interrupted_by_a_crash_never_loads_the_bad_model_again(rig: Rig) -> None:
    rig.start()
    m1, m2 = rig.release(1), rig.release(2)
    rig.handle(rig.desired(m1))
    rig.host.health_value = Health(inferences=50, errors=50)
    _crash(rig, rig.desired(m2), S.REVERTED)  # recorded, pointer not yet moved back
    assert rig.active_sha() == m2.artifact.sha256
    rig.restart()  # the new model may be what crashed the process: it must not load
    assert list(rig.host.activations) == [m1.artifact.sha256], rig.dump()
    assert rig.active_sha() == m1.artifact.sha256
    _assert_consistent(rig)


def test_crash_loop_during_probation_reverts(rig: Rig) -> None:
    rig.start()
    m1, m2 = rig.release(1), rig.release(2)
    rig.handle(rig.desired(m1))
    _crash(rig, rig.desired(m2), S.PROBATION)
    # Each restart resumes probation and "dies" again before it ends.
    for _ in range(rig.config.crash_loop_boots):
        updater = rig.restart()
        assert rig.state == S.PROBATION
        assert updater.journal.update is not None
    updater = rig.restart()  # one restart too many
    updater.drive()
    assert rig.state == S.REVERTED
    assert rig.reports()[-1].reason == "crash-loop"
    assert rig.active_sha() == m1.artifact.sha256


def test_clean_stops_are_not_counted_as_crashes(rig: Rig) -> None:
    rig.start()
    m1, m2 = rig.release(1), rig.release(2)
    rig.handle(rig.desired(m1))
    _crash(rig, rig.desired(m2), S.PROBATION)
    for _ in range(rig.config.crash_loop_boots + 2):
        updater = rig.restart()
        updater.recorder.save(clean_stop=True)  # what run() does on SIGTERM
    rig.restart().drive()
    assert rig.state == S.COMMITTED


def test_a_committed_model_survives_any_number_of_restarts(rig: Rig) -> None:
    rig.start()
    m1 = rig.release(1)
    rig.handle(rig.desired(m1))
    for _ in range(rig.config.crash_loop_boots + 3):
        updater = rig.restart()
        updater.drive()
    assert rig.state == S.COMMITTED
    assert rig.active_sha() == m1.artifact.sha256
    assert rig.host.activations == [m1.artifact.sha256]
    assert rig.states().count("committed") == 1


def test_load_failure_of_the_new_model_at_boot_reverts(rig: Rig) -> None:
    rig.start()
    m1, m2 = rig.release(1), rig.release(2)
    rig.handle(rig.desired(m1))
    _crash(rig, rig.desired(m2), S.PROBATION)
    rig.host.fail_on.add(m2.artifact.sha256)
    rig.restart().drive()
    assert rig.state == S.REVERTED
    assert rig.reports()[-1].reason == "runtime"
    assert rig.active_sha() == m1.artifact.sha256


def test_a_document_waiting_for_a_recheck_is_dropped_once_a_newer_one_is_accepted(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    updater = rig.start()
    m1, m2 = rig.release(1), rig.release(2)
    older, newer = rig.desired(m1, sequence=1), rig.desired(m2, sequence=2)
    verify = updater.gate.verify

    def unreachable(*args: object, **kwargs: object) -> object:
        raise TransportError("the control plane is unreachable")

    monkeypatch.setattr(updater_module, "RETRY_LATER_S", 0.0)  # due at once
    monkeypatch.setattr(updater.gate, "verify", unreachable)
    updater.consider(older)  # cannot be checked now: kept for a later re-check
    monkeypatch.setattr(updater.gate, "verify", verify)
    rig.handle(newer)
    assert rig.state == S.COMMITTED and rig.active_sha() == m2.artifact.sha256
    assert updater._next_document() is None  # the older one is never re-checked
    assert rig.state == S.COMMITTED, rig.dump()
