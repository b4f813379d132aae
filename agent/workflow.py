"""The update workflow as data: states, events and the one transition table.

Theory of operation (after h11): :data:`TRANSITIONS` maps ``(state, event)``
to the next state and is the only place that says which moves exist. A
:class:`Workflow` holds the current state; :meth:`Workflow.apply` looks the
pair up and either moves or raises :class:`~agent.errors.IllegalTransitionError`
leaving the state unchanged. Nothing here does I/O: the updater persists the
new state, then carries out what the state means.

The happy path::

    idle ─ASSIGNED→ notified ─FETCH→ downloading ─DOWNLOADED→ verifying ─VERIFIED→
    staged ─TEST→ smoke_test ─PASSED→ activating ─ACTIVATED→ probation ─HEALTHY→ committed

Exits: ``FAIL`` from any state before activation leads to ``failed`` (the
active model was never touched); ``REVERT`` from ``activating`` or
``probation`` leads to ``reverted`` (the previous committed model is served
again). ``REFUSED`` (a desired state that failed verification) leads to
``rejected``, only from a resting state: while an update runs, a refused
message is reported but does not disturb it. ``ALREADY_ACTIVE`` commits an
assignment of the release that is already committed and served, and
``REFETCH`` sends ``verifying`` back to ``downloading`` when the partial file
vanished or was corrupt.

Invariants: resting states (``idle`` and the terminal ones) accept only
``ASSIGNED`` and ``REFUSED``; ``committed`` is reached only through
``probation`` or ``ALREADY_ACTIVE``; nothing leaves ``activating`` or
``probation`` except forward or to ``reverted``.
"""

from __future__ import annotations

from enum import Enum

from agent.errors import IllegalTransitionError
from fleetcore.protocol import UpdateState

S = UpdateState


class Event(str, Enum):
    ASSIGNED = "assigned"  # a verified assignment for a new target
    REFUSED = "refused"  # a desired state failed verification
    FETCH = "fetch"
    ALREADY_ACTIVE = "already_active"
    DOWNLOADED = "downloaded"
    REFETCH = "refetch"
    VERIFIED = "verified"
    TEST = "test"
    PASSED = "passed"
    ACTIVATED = "activated"
    HEALTHY = "healthy"
    FAIL = "fail"
    REVERT = "revert"


E = Event

#: States an update can rest in; a new assignment may start from any of them.
RESTING = (S.IDLE, S.COMMITTED, S.REVERTED, S.FAILED, S.REJECTED)
#: States of an update in progress, in workflow order.
IN_PROGRESS = (
    S.NOTIFIED,
    S.DOWNLOADING,
    S.VERIFYING,
    S.STAGED,
    S.SMOKE_TEST,
    S.ACTIVATING,
    S.PROBATION,
)
#: In progress and the new model may already be serving: exits revert.
ACTIVATED = (S.ACTIVATING, S.PROBATION)

TRANSITIONS: dict[tuple[UpdateState, Event], UpdateState] = {
    **{(rest, E.ASSIGNED): S.NOTIFIED for rest in RESTING},
    **{(rest, E.REFUSED): S.REJECTED for rest in RESTING},
    (S.NOTIFIED, E.FETCH): S.DOWNLOADING,
    (S.NOTIFIED, E.ALREADY_ACTIVE): S.COMMITTED,
    (S.DOWNLOADING, E.DOWNLOADED): S.VERIFYING,
    (S.VERIFYING, E.VERIFIED): S.STAGED,
    (S.VERIFYING, E.REFETCH): S.DOWNLOADING,
    (S.STAGED, E.TEST): S.SMOKE_TEST,
    (S.SMOKE_TEST, E.PASSED): S.ACTIVATING,
    (S.ACTIVATING, E.ACTIVATED): S.PROBATION,
    (S.PROBATION, E.HEALTHY): S.COMMITTED,
    **{
        (state, E.FAIL): S.FAILED
        for state in IN_PROGRESS
        if state not in (S.ACTIVATING, S.PROBATION)
    },
    (S.ACTIVATING, E.REVERT): S.REVERTED,
    (S.PROBATION, E.REVERT): S.REVERTED,
}


def next_state(state: UpdateState, event: Event) -> UpdateState:
    """The state ``event`` leads to from ``state``, or IllegalTransitionError."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransitionError(
            f"event {event.value!r} is not allowed in state {state.value!r}"
        ) from None


class Workflow:
    """The current state of the update workflow; moves only along the table."""

    def __init__(self, state: UpdateState = S.IDLE) -> None:
        self.state = state

    def apply(self, event: Event) -> UpdateState:
        self.state = next_state(self.state, event)
        return self.state

    @property
    def busy(self) -> bool:
        return self.state in IN_PROGRESS


__all__ = ["ACTIVATED", "IN_PROGRESS", "RESTING", "TRANSITIONS", "Event", "Workflow", "next_state"]
