"""The transition table: every state x event, legal moves move, illegal ones raise and stay."""

from __future__ import annotations

import itertools

import pytest

from agent.errors import IllegalTransitionError
from agent.workflow import IN_PROGRESS, RESTING, TRANSITIONS, Event, Workflow, next_state
from fleetcore.protocol import UpdateState as S

E = Event

#: The whole table, written out by hand so a change to the code must change this too.
EXPECTED = {
    **{(r, E.ASSIGNED): S.NOTIFIED for r in RESTING},
    **{(r, E.REFUSED): S.REJECTED for r in RESTING},
    (S.NOTIFIED, E.FETCH): S.DOWNLOADING,
    (S.NOTIFIED, E.ALREADY_ACTIVE): S.COMMITTED,
    (S.NOTIFIED, E.FAIL): S.FAILED,
    (S.DOWNLOADING, E.DOWNLOADED): S.VERIFYING,
    (S.DOWNLOADING, E.FAIL): S.FAILED,
    (S.VERIFYING, E.VERIFIED): S.STAGED,
    (S.VERIFYING, E.REFETCH): S.DOWNLOADING,
    (S.VERIFYING, E.FAIL): S.FAILED,
    (S.STAGED, E.TEST): S.SMOKE_TEST,
    (S.STAGED, E.FAIL): S.FAILED,
    (S.SMOKE_TEST, E.PASSED): S.ACTIVATING,
    (S.SMOKE_TEST, E.FAIL): S.FAILED,
    (S.ACTIVATING, E.ACTIVATED): S.PROBATION,
    (S.ACTIVATING, E.REVERT): S.REVERTED,
    (S.PROBATION, E.HEALTHY): S.COMMITTED,
    (S.PROBATION, E.REVERT): S.REVERTED,
}


def test_the_table_is_exactly_the_documented_one() -> None:
    assert TRANSITIONS == EXPECTED


def test_every_state_is_resting_or_in_progress() -> None:
    assert set(RESTING) | set(IN_PROGRESS) == set(S)
    assert not set(RESTING) & set(IN_PROGRESS)


@pytest.mark.parametrize(("state", "event"), list(itertools.product(S, Event)))
def test_every_state_and_event(state: S, event: Event) -> None:
    workflow = Workflow(state)
    expected = EXPECTED.get((state, event))
    if expected is None:
        with pytest.raises(IllegalTransitionError):
            workflow.apply(event)
        assert workflow.state == state  # unchanged
    else:
        assert workflow.apply(event) == expected
        assert workflow.state == expected


def test_failures_before_activation_fail_and_after_it_revert() -> None:
    for state in IN_PROGRESS:
        activated = state in (S.ACTIVATING, S.PROBATION)
        assert ((state, E.FAIL) in TRANSITIONS) is not activated
        assert ((state, E.REVERT) in TRANSITIONS) is activated


def test_committed_is_reached_only_through_probation_or_already_active() -> None:
    sources = {(s, e) for (s, e), t in TRANSITIONS.items() if t == S.COMMITTED}
    assert sources == {(S.PROBATION, E.HEALTHY), (S.NOTIFIED, E.ALREADY_ACTIVE)}


def test_the_happy_path() -> None:
    workflow = Workflow()
    path = [E.ASSIGNED, E.FETCH, E.DOWNLOADED, E.VERIFIED, E.TEST, E.PASSED, E.ACTIVATED]
    for event in path:
        workflow.apply(event)
        assert workflow.busy
    assert workflow.apply(E.HEALTHY) == S.COMMITTED
    assert not workflow.busy


def test_illegal_event_message_names_both() -> None:
    with pytest.raises(IllegalTransitionError, match="'healthy' is not allowed in state 'idle'"):
        next_state(S.IDLE, E.HEALTHY)
