"""The rollout engine as named scenario tables, plus every illegal move (after h11).

Each scenario is a list of steps ``(seconds after T0, event, phase, wave,
actions)``; an action is written ``open N``, ``revert SCOPE N`` or a Record's
decision. After every step the state must also survive ``to_dict`` /
``from_dict``. The illegal-move test enumerates every (phase, event type) pair
missing from TRANSITIONS and checks both halves of the contract: it raises, and
the state is unchanged.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import pytest

from control_plane.errors import StateError
from control_plane.rollouts.engine import (
    TERMINAL,
    TRANSITIONS,
    Abort,
    Action,
    Event,
    IllegalEventError,
    Observe,
    OpenWave,
    Pause,
    Phase,
    Promote,
    Record,
    Resume,
    Revert,
    Rollback,
    Rollout,
    RolloutState,
    Start,
)
from control_plane.rollouts.gates import GateResult, HealthEvidence, Outcome, WaveCounts
from control_plane.rollouts.spec import (
    AfterInconclusive,
    Gates,
    HealthGate,
    OnFailure,
    QualityGate,
    QualityMode,
    RolloutSpec,
    Wave,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
OPS = "ops"
REVERT_ALL, REVERT_WAVE = OnFailure.REVERT_ALL, OnFailure.REVERT_WAVE
CREATED, PROGRESSING, SOAKING = Phase.CREATED, Phase.PROGRESSING, Phase.SOAKING
AWAITING, PAUSED, COMPLETED = Phase.AWAITING_APPROVAL, Phase.PAUSED, Phase.COMPLETED
ABORTED, FAILED, ROLLED_BACK = Phase.ABORTED, Phase.FAILED, Phase.ROLLED_BACK

THREE = (Wave(percent=10.0), Wave(percent=50.0), Wave(percent=100.0))
SOAK_S = 600.0
SOAK_END = 10 + int(SOAK_S)
SOAKED = tuple(replace(w, soak_s=SOAK_S) for w in THREE)
APPROVAL = (Wave(percent=10.0), Wave(percent=50.0, approval=True), Wave(percent=100.0))
HEALTH = Gates(health=HealthGate(max_error_rate=0.01), inconclusive_timeout_s=300.0)


def make(**kw: Any) -> RolloutSpec:
    return RolloutSpec(name="r1", model="sensor", release=2, **{"waves": THREE, **kw})


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


DONE = Observe(WaveCounts(total=10, committed=10))  # no telemetry: health is inconclusive
BUSY = Observe(WaveCounts(total=10, committed=4, installing=6))
BREACH = Observe(WaveCounts(total=10, committed=2, failed=2, installing=6))  # can no longer pass
FAILED_DONE = Observe(WaveCounts(total=10, committed=8, failed=2))
HEALTHY = Observe(DONE.counts, HealthEvidence(1000, 0, 50.0, 50.0))
SICK = Observe(DONE.counts, HealthEvidence(1000, 100, 50.0, 50.0))
DRIFTED = Observe(DONE.counts, quality=GateResult("quality", Outcome.FAIL, "outputs drifted"))


class Step(NamedTuple):
    t: float
    event: Event
    phase: Phase
    wave: int
    actions: list[str]


INSTALLED = ["wave.installed"]
START = Step(0, Start(), PROGRESSING, 0, ["open 0", "wave.opened"])


def opened(wave: int) -> list[str]:
    return ["wave.passed", f"open {wave}", "wave.opened"]


def passes(wave: int, t: float, event: Observe = DONE, last: bool = False) -> list[Step]:
    """A wave without soak finishes, then passes at its next observation."""
    if last:
        judged = Step(t, event, COMPLETED, wave, ["wave.passed", "rollout.completed"])
    else:
        judged = Step(t, event, PROGRESSING, wave + 1, opened(wave + 1))
    return [Step(t, event, SOAKING, wave, INSTALLED), judged]


def through_awaiting(t: float = 10) -> list[Step]:
    """APPROVAL waves: wave 0 passes and wave 1 waits for an operator."""
    return [
        START,
        Step(t, DONE, SOAKING, 0, INSTALLED),
        Step(t, DONE, AWAITING, 1, ["wave.passed", "wave.awaiting_approval"]),
    ]


#: The wave installed, no telemetry: the health gate waits (HEALTH's timeout is 300 s).
WAITING = [
    START,
    Step(10, DONE, SOAKING, 0, INSTALLED),
    Step(10, DONE, SOAKING, 0, ["gates.inconclusive"]),
    Step(309, DONE, SOAKING, 0, []),
]
TIMEOUT_PASSES = replace(HEALTH, after_inconclusive=AfterInconclusive.PASS)
TIMEOUT_FAILS = replace(HEALTH, after_inconclusive=AfterInconclusive.FAIL)


OPEN_1 = ["open 1", "wave.opened"]
PROMOTED = ["rollout.promoted", *OPEN_1]
GATE_PAUSED = ["wave.failed", "rollout.paused"]
PAUSED_, RESUMED, ABORTED_ = ["rollout.paused"], ["rollout.resumed"], ["rollout.aborted"]
OBSERVE_QUALITY = Gates(quality=QualityGate(QualityMode.OBSERVE))
ONLY_WAVE_NEEDS_APPROVAL = (Wave(percent=100.0, approval=True),)


def rolled_back(wave: int) -> list[str]:
    return ["rollout.rolled_back", f"revert all {wave}"]


SCENARIOS: dict[str, tuple[RolloutSpec, list[Step]]] = {
    "three waves, no soak": (make(), [
        START,
        Step(5, BUSY, PROGRESSING, 0, []),
        Step(10, DONE, SOAKING, 0, INSTALLED),
        Step(10, DONE, PROGRESSING, 1, ["wave.passed", "open 1", "wave.opened"]),
        Step(20, BUSY, PROGRESSING, 1, []),
        Step(30, DONE, SOAKING, 1, INSTALLED),
        Step(30, DONE, PROGRESSING, 2, ["wave.passed", "open 2", "wave.opened"]),
        Step(40, DONE, SOAKING, 2, INSTALLED),
        Step(40, DONE, COMPLETED, 2, ["wave.passed", "rollout.completed"]),
    ]),
    "three waves with soak": (make(waves=SOAKED), [
        START,
        Step(10, DONE, SOAKING, 0, INSTALLED), Step(609, DONE, SOAKING, 0, []),
        Step(610, DONE, PROGRESSING, 1, opened(1)),
        Step(620, DONE, SOAKING, 1, INSTALLED), Step(1219, DONE, SOAKING, 1, []),
        Step(1220, DONE, PROGRESSING, 2, opened(2)),
        Step(1230, DONE, SOAKING, 2, INSTALLED),
        Step(1830, DONE, COMPLETED, 2, ["wave.passed", "rollout.completed"]),
    ]),
    "a failing gate cuts the soak short": (make(waves=SOAKED, gates=HEALTH), [
        START, Step(10, HEALTHY, SOAKING, 0, INSTALLED), Step(20, SICK, PAUSED, 0, GATE_PAUSED),
    ]),
    "install breach pauses": (make(), [
        START, Step(5, BREACH, PAUSED, 0, GATE_PAUSED),
        Step(6, Resume(OPS), PROGRESSING, 0, RESUMED), Step(7, BREACH, PAUSED, 0, GATE_PAUSED),
    ]),
    "install breach reverts the wave": (make(on_failure=REVERT_WAVE), [
        START, *passes(0, 10), Step(20, BREACH, FAILED, 1, ["wave.failed", "revert wave 1"]),
    ]),
    "install breach reverts all": (make(on_failure=REVERT_ALL), [
        START, *passes(0, 10), Step(20, BREACH, FAILED, 1, ["wave.failed", "revert all 1"]),
    ]),
    "install failure found as the wave finishes": (make(on_failure=REVERT_WAVE), [
        START, Step(10, FAILED_DONE, FAILED, 0, ["wave.failed", "revert wave 0"]),
    ]),
    "inconclusive, then evidence arrives": (make(gates=HEALTH), [
        *WAITING, Step(310, HEALTHY, PROGRESSING, 1, opened(1)),
    ]),
    "inconclusive past the timeout passes": (make(gates=TIMEOUT_PASSES), [
        *WAITING, Step(310, DONE, PROGRESSING, 1, ["gates.inconclusive_timeout", *opened(1)]),
    ]),
    "inconclusive past the timeout fails": (make(gates=TIMEOUT_FAILS, on_failure=REVERT_ALL), [
        *WAITING,
        Step(310, DONE, FAILED, 0, ["gates.inconclusive_timeout", "wave.failed", "revert all 0"]),
    ]),
    "inconclusive past the timeout pauses, and the timer restarts on resume": (make(gates=HEALTH), [
        *WAITING,
        Step(310, DONE, PAUSED, 0, ["gates.inconclusive_timeout", "rollout.paused"]),
        Step(400, Resume(OPS), SOAKING, 0, RESUMED),
        Step(400, DONE, SOAKING, 0, ["gates.inconclusive"]), Step(699, DONE, SOAKING, 0, []),
        Step(700, HEALTHY, PROGRESSING, 1, opened(1)),
    ]),
    "pause and resume while progressing": (make(), [
        START, Step(5, Pause(OPS), PAUSED, 0, PAUSED_),
        Step(6, Resume(OPS), PROGRESSING, 0, RESUMED), *passes(0, 10),
    ]),
    "resume into soaking keeps the soak's end": (make(waves=SOAKED), [
        START, Step(10, DONE, SOAKING, 0, INSTALLED), Step(20, Pause(OPS), PAUSED, 0, PAUSED_),
        Step(30, Resume(OPS), SOAKING, 0, RESUMED), Step(30, DONE, SOAKING, 0, []),
        Step(SOAK_END, DONE, PROGRESSING, 1, opened(1)),
    ]),
    "pause and resume while awaiting approval": (make(waves=APPROVAL), [
        *through_awaiting(),
        Step(20, Pause(OPS), PAUSED, 1, PAUSED_), Step(30, Resume(OPS), AWAITING, 1, RESUMED),
    ]),
    "promote approves a waiting wave": (make(waves=APPROVAL), [
        *through_awaiting(), Step(50, Promote(OPS), PROGRESSING, 1, PROMOTED),
        *passes(1, 60), *passes(2, 70, last=True),
    ]),
    "approval before wave 0": (make(waves=ONLY_WAVE_NEEDS_APPROVAL), [
        Step(0, Start(), AWAITING, 0, ["wave.awaiting_approval"]),
        Step(5, Promote(OPS), PROGRESSING, 0, ["rollout.promoted", "open 0", "wave.opened"]),
        *passes(0, 10, last=True),
    ]),
    "promote skips the soak": (make(waves=SOAKED), [
        START, Step(10, DONE, SOAKING, 0, INSTALLED),
        Step(20, Promote(OPS), PROGRESSING, 1, PROMOTED),
    ]),
    "promote on the last wave completes": (make(), [
        START, *passes(0, 10), *passes(1, 20),
        Step(30, Promote(OPS), COMPLETED, 2, ["rollout.promoted", "rollout.completed"]),
    ]),
    "promote from a gate-failure pause": (make(), [
        START, Step(5, BREACH, PAUSED, 0, GATE_PAUSED),
        Step(6, Promote(OPS), PROGRESSING, 1, PROMOTED),
    ]),
    "promote from a pause stops again before an approval wave": (make(waves=APPROVAL), [
        START, Step(5, BREACH, PAUSED, 0, GATE_PAUSED),
        Step(6, Promote(OPS), AWAITING, 1, ["rollout.promoted", "wave.awaiting_approval"]),
        Step(7, Promote(OPS), PROGRESSING, 1, PROMOTED),
    ]),
    "promote from a pause taken while awaiting approval": (make(waves=APPROVAL), [
        *through_awaiting(),
        Step(20, Pause(OPS), PAUSED, 1, PAUSED_), Step(30, Promote(OPS), PROGRESSING, 1, PROMOTED),
    ]),
    "abort before start": (make(), [Step(0, Abort(OPS), ABORTED, 0, ABORTED_)]),
    "abort while progressing": (make(), [
        START, *passes(0, 10), Step(20, Abort(OPS), ABORTED, 1, ABORTED_),
    ]),
    "abort while paused": (make(), [
        START, Step(5, Pause(OPS), PAUSED, 0, PAUSED_), Step(6, Abort(OPS), ABORTED, 0, ABORTED_),
    ]),
    "rollback while running": (make(), [
        START, *passes(0, 10), Step(20, Rollback(OPS), ROLLED_BACK, 1, rolled_back(1)),
    ]),
    "rollback while paused": (make(), [
        START, Step(5, BREACH, PAUSED, 0, GATE_PAUSED),
        Step(6, Rollback(OPS), ROLLED_BACK, 0, rolled_back(0)),
    ]),
    "rollback after completion": (make(), [
        START, *passes(0, 10), *passes(1, 20), *passes(2, 30, last=True),
        Step(40, Rollback(OPS), ROLLED_BACK, 2, rolled_back(2)),
    ]),
    "rollback after a failed wave": (make(on_failure=REVERT_WAVE), [
        START, *passes(0, 10), Step(20, BREACH, FAILED, 1, ["wave.failed", "revert wave 1"]),
        Step(30, Rollback(OPS), ROLLED_BACK, 1, rolled_back(1)),
    ]),
    "rollback after abort": (make(), [
        START, Step(5, Abort(OPS), ABORTED, 0, ABORTED_),
        Step(6, Rollback(OPS), ROLLED_BACK, 0, rolled_back(0)),
    ]),
    "created paused": (make(paused=True), [
        Step(0, Start(), PAUSED, 0, ["open 0", "wave.opened", "rollout.paused"]),
        Step(5, Resume(OPS), PROGRESSING, 0, RESUMED), *passes(0, 10),
    ]),
    "created paused before an approval wave": (make(paused=True, waves=ONLY_WAVE_NEEDS_APPROVAL), [
        Step(0, Start(), PAUSED, 0, ["wave.awaiting_approval", "rollout.paused"]),
        Step(5, Resume(OPS), AWAITING, 0, RESUMED),
        Step(6, Promote(OPS), PROGRESSING, 0, ["rollout.promoted", "open 0", "wave.opened"]),
    ]),
    "dry run records what would happen and completes": (
        make(dry_run=True, on_failure=REVERT_ALL, gates=HEALTH), [
            START,
            Step(5, BREACH, PROGRESSING, 0, []),
            Step(10, FAILED_DONE, SOAKING, 0, INSTALLED),
            Step(10, FAILED_DONE, PROGRESSING, 1, ["dry_run.would_revert_all", *OPEN_1]),
            Step(20, HEALTHY, SOAKING, 1, INSTALLED),
            Step(20, SICK, PROGRESSING, 2, ["dry_run.would_revert_all", "open 2", "wave.opened"]),
            *passes(2, 30, event=HEALTHY, last=True),
        ],
    ),
    "dry run with pause on failure": (make(dry_run=True), [
        START, Step(10, FAILED_DONE, SOAKING, 0, INSTALLED),
        Step(10, FAILED_DONE, PROGRESSING, 1, ["dry_run.would_pause", *OPEN_1]),
    ]),
    "quality in observe mode never blocks": (
        make(gates=OBSERVE_QUALITY, on_failure=REVERT_ALL),
        [START, *passes(0, 10, DRIFTED), *passes(1, 20), *passes(2, 30, DRIFTED, last=True)],
    ),
    "quality in pause mode blocks": (make(gates=Gates(quality=QualityGate(QualityMode.PAUSE))), [
        START, Step(10, DRIFTED, SOAKING, 0, INSTALLED), Step(10, DRIFTED, PAUSED, 0, GATE_PAUSED),
    ]),
    "quality in pause mode pauses even under revert_all": (
        make(gates=Gates(quality=QualityGate(QualityMode.PAUSE)), on_failure=REVERT_ALL), [
            START, Step(10, DRIFTED, SOAKING, 0, INSTALLED),
            Step(10, DRIFTED, PAUSED, 0, GATE_PAUSED),
        ],
    ),
    "quality in revert mode reverts the wave even under pause": (
        make(gates=Gates(quality=QualityGate(QualityMode.REVERT))), [
            START, Step(10, DRIFTED, SOAKING, 0, INSTALLED),
            Step(10, DRIFTED, FAILED, 0, ["wave.failed", "revert wave 0"]),
        ],
    ),
    "install failure under quality pause mode follows on_failure": (
        make(gates=Gates(quality=QualityGate(QualityMode.PAUSE)), on_failure=REVERT_ALL), [
            START, Step(5, BREACH, FAILED, 0, ["wave.failed", "revert all 0"]),
        ],
    ),
    "dry run: an inconclusive timeout that would pause only records it": (
        make(dry_run=True, gates=HEALTH), [
            *WAITING,
            Step(310, DONE, PROGRESSING, 1, ["dry_run.would_pause", *opened(1)]),
        ],
    ),
}  # fmt: skip


def describe(action: Action) -> str:
    if isinstance(action, OpenWave):
        return f"open {action.wave}"
    if isinstance(action, Revert):
        return f"revert {action.scope.value} {action.wave}"
    return action.decision


@pytest.mark.parametrize(("spec", "steps"), SCENARIOS.values(), ids=SCENARIOS.keys())
def test_scenario(spec: RolloutSpec, steps: list[Step]) -> None:
    rollout = Rollout(spec)
    for index, step in enumerate(steps):
        actions = rollout.apply(step.event, at(step.t))
        got = (rollout.phase, rollout.state.wave, [describe(a) for a in actions])
        assert got == (step.phase, step.wave, step.actions), f"step {index}: {step}"
        assert RolloutState.from_dict(rollout.state.to_dict()) == rollout.state


def run(spec: RolloutSpec, *events: Event) -> Rollout:
    rollout = Rollout(spec)
    for event in events:
        rollout.apply(event, at(10))
    return rollout


def test_a_gate_failure_records_its_evidence_and_reason() -> None:
    rollout = run(make(on_failure=REVERT_WAVE), Start(), DONE, DONE)
    record = rollout.apply(BREACH, at(20))[0]
    assert isinstance(record, Record)
    assert record.evidence["wave"] == 1
    assert record.evidence["on_failure"] == "revert_wave"
    assert [(g["gate"], g["outcome"]) for g in record.evidence["gates"]] == [("install", "fail")]
    assert record.evidence["gates"] == rollout.state.gates
    assert rollout.state.reason == "install gate failed"


def test_a_dry_run_record_is_marked_and_observe_mode_records_a_pass() -> None:
    record = run(make(dry_run=True), Start(), FAILED_DONE).apply(FAILED_DONE, at(10))[0]
    assert isinstance(record, Record)
    assert (record.evidence["dry_run"], record.evidence["on_failure"]) == (True, "pause")
    rollout = run(make(gates=OBSERVE_QUALITY), Start(), DRIFTED)
    assert rollout.state.gates[-1]["outcome"] == "pass"
    assert rollout.state.gates[-1]["detail"] == "observe only: outputs drifted"


def test_pause_remembers_where_and_why_and_resume_forgets() -> None:
    rollout = run(make(waves=SOAKED), Start(), DONE)
    rollout.apply(Pause(OPS, "looking at dashboards"), at(20))
    assert (rollout.state.paused_from, rollout.state.reason) == (SOAKING, "looking at dashboards")
    rollout.apply(Resume(OPS), at(30))
    assert (rollout.state.paused_from, rollout.state.reason) == (None, None)
    assert rollout.state.soak_until == at(10 + SOAK_S)  # a pause does not shorten the soak


RUNNING = {PROGRESSING, SOAKING, AWAITING}
LEGAL: dict[type[Any], set[Phase]] = {
    Start: {CREATED},
    Observe: {PROGRESSING, SOAKING},
    Pause: RUNNING,
    Resume: {PAUSED},
    Promote: RUNNING | {PAUSED},
    Abort: RUNNING | {PAUSED, CREATED},
    Rollback: RUNNING | {PAUSED, COMPLETED, ABORTED, FAILED},
}
EVENTS: list[Event] = [
    Start(), DONE, Pause(OPS), Resume(OPS), Promote(OPS), Abort(OPS), Rollback(OPS),
]  # fmt: skip


ILLEGAL = [(p, e) for p in Phase for e in EVENTS if (p, type(e)) not in TRANSITIONS]


def test_the_transition_table_is_exactly_the_legal_moves() -> None:
    assert set(TRANSITIONS) == {(phase, kind) for kind, phases in LEGAL.items() for phase in phases}
    assert {type(e) for e in EVENTS} == set(LEGAL)
    assert len(ILLEGAL) == len(Phase) * len(EVENTS) - len(TRANSITIONS) == 40


def state_in(phase: Phase) -> RolloutState:
    return RolloutState(
        phase=phase,
        wave=0 if phase is CREATED else 1,
        wave_opened_at=None if phase is CREATED else at(100),
        soak_until=at(700) if phase is SOAKING else None,
        inconclusive_since=at(710) if phase is SOAKING else None,
        paused_from=SOAKING if phase is PAUSED else None,
        reason="why" if phase in TERMINAL | {PAUSED} else None,
        gates=[{"gate": "install", "outcome": "pass", "detail": "ok", "values": {"total": 3}}],
    )


@pytest.mark.parametrize(
    ("phase", "event"), ILLEGAL, ids=[f"{p.value}-{type(e).__name__}" for p, e in ILLEGAL]
)
def test_an_illegal_event_raises_and_changes_nothing(phase: Phase, event: Event) -> None:
    rollout = Rollout(make(), state_in(phase))
    before = rollout.state.to_dict()
    with pytest.raises(IllegalEventError) as caught:
        rollout.apply(event, at(1000))
    assert isinstance(caught.value, StateError)
    assert phase.value in str(caught.value)
    assert rollout.state.to_dict() == before


def test_a_handler_that_raises_changes_nothing() -> None:
    rollout = Rollout(make(), state_in(SOAKING))
    before = rollout.state.to_dict()
    naive = datetime(2025, 3, 1, 12, 30)  # comparing it to an aware time raises
    with pytest.raises(TypeError):
        rollout.apply(HEALTHY, naive)  # the gates are recorded, then the comparison raises
    assert rollout.state.to_dict() == before


ROUND_TRIPS = {
    "default": RolloutState(),
    "every field set": replace(state_in(PAUSED), soak_until=at(5), inconclusive_since=at(6)),
    "other time zone": RolloutState(
        phase=SOAKING, wave=2, soak_until=datetime(2025, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    ),
}


@pytest.mark.parametrize("state", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_state_round_trips_through_json(state: RolloutState) -> None:
    again = RolloutState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state
    assert again.to_dict() == state.to_dict()


def test_state_to_dict_writes_aware_times_and_enum_values() -> None:
    obj = state_in(PAUSED).to_dict()
    assert (obj["wave_opened_at"], obj["soak_until"]) == ("2025-03-01T12:01:40+00:00", None)
    assert (obj["phase"], obj["paused_from"], obj["wave"]) == ("paused", "soaking", 1)
