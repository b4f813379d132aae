"""Random walks through the rollout engine (Hypothesis stateful testing).

A random spec (waves, soak, approvals, gates, on_failure, dry run, created
paused) is driven by random events at moving times: observations with
internally consistent wave counts and random telemetry, and every operator
command, whether or not it is legal in the current phase. After each event:

* an illegal event raised IllegalEventError and left the state unchanged, and a
  legal one did not raise (the TRANSITIONS table is the whole truth);
* the wave index never decreases and stays below the number of waves;
* a terminal phase only ever moves by Rollback, to rolled_back;
* a Revert action comes only with phase failed or rolled_back;
* waves open once each, in order, and completed comes only after the last wave
  was opened.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import event as note
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from control_plane.rollouts.engine import (
    TRANSITIONS,
    Abort,
    Event,
    IllegalEventError,
    Observe,
    OpenWave,
    Pause,
    Phase,
    Promote,
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
    InstallGate,
    OnFailure,
    QualityGate,
    QualityMode,
    RolloutSpec,
    Wave,
)

T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)
COMMANDS: list[Event] = [
    Start(), *[Pause("ops")] * 3, *[Resume("ops")] * 4, *[Promote("ops")] * 3,
    Abort("ops"), Rollback("ops"),
]  # fmt: skip
RUNNING = {Phase.PROGRESSING, Phase.SOAKING, Phase.AWAITING_APPROVAL}


@st.composite
def specs(draw: st.DrawFn) -> RolloutSpec:
    n = draw(st.integers(1, 4))
    percents = [*sorted(draw(st.lists(st.integers(1, 99), min_size=n - 1, max_size=n - 1))), 100]
    waves = tuple(
        Wave(
            percent=float(percent),
            soak_s=draw(st.sampled_from([0.0, 60.0, 600.0])),
            approval=draw(st.booleans()),
        )
        for percent in percents
    )
    gates = Gates(
        install=InstallGate(
            min_success_ratio=draw(st.sampled_from([0.5, 0.95, 1.0])),
            max_failure_ratio=draw(st.sampled_from([0.0, 0.05, 0.5])),
            min_executed=draw(st.integers(0, 5)),
        ),
        health=draw(st.none() | st.just(HealthGate(0.05, 1.5, min_inferences=50))),
        quality=QualityGate(draw(st.sampled_from(QualityMode))),
        inconclusive_timeout_s=draw(st.sampled_from([0.0, 120.0, 900.0])),
        after_inconclusive=draw(st.sampled_from(AfterInconclusive)),
    )
    return RolloutSpec(
        name="r1",
        model="sensor",
        release=2,
        waves=waves,
        gates=gates,
        on_failure=draw(st.sampled_from(OnFailure)),
        dry_run=draw(st.booleans()),
        paused=draw(st.booleans()),
    )


@st.composite
def wave_counts(draw: st.DrawFn) -> WaveCounts:
    """Counts whose parts add up to the total; failures are rare, as in a real fleet."""
    if draw(st.booleans()):
        total = draw(st.integers(0, 20))
        return WaveCounts(total=total, committed=total)
    parts = {k: draw(st.integers(0, 8)) for k in ("pending", "installing", "committed")}
    parts |= {k: draw(st.sampled_from([0, 0, 0, 1, 2])) for k in ("failed", "reverted")}
    return WaveCounts(total=sum(parts.values()), **parts)


@st.composite
def health(draw: st.DrawFn) -> HealthEvidence:
    inferences = draw(st.integers(0, 200))
    latency = st.none() | st.floats(1.0, 200.0)
    return HealthEvidence(
        inferences, draw(st.integers(0, inferences)), draw(latency), draw(latency)
    )


HEALTHY = HealthEvidence(
    inferences=500, errors=0, p95_latency_ms=40.0, previous_p95_latency_ms=40.0
)
NO_DRIFT = GateResult("quality", Outcome.PASS, "no drift")
quality = st.none() | st.builds(
    GateResult, st.just("quality"), st.sampled_from(Outcome), st.just("drift summary")
)


class RolloutMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.spec = RolloutSpec(name="r1", model="sensor", release=2)
        self.rollout = Rollout(self.spec)
        self.now = T0
        self.opened: list[int] = []

    @initialize(spec=specs(), start=st.integers(0, 4))
    def create(self, spec: RolloutSpec, start: int) -> None:
        self.spec, self.rollout = spec, Rollout(spec)
        if start:  # mostly begin started; Start stays a (then illegal) command too
            self.apply(Start())

    def apply(self, event: Event) -> None:
        before, phase, wave = (
            self.rollout.state.to_dict(),
            self.rollout.phase,
            self.rollout.state.wave,
        )
        legal = (phase, type(event)) in TRANSITIONS
        try:
            actions = self.rollout.apply(event, self.now)
        except IllegalEventError:
            assert not legal
            assert self.rollout.state.to_dict() == before
            return
        assert legal, f"{type(event).__name__} in {phase.value} should have raised"
        after = self.rollout.state
        note(f"{phase.value} -{type(event).__name__}-> {after.phase.value}")
        assert wave <= after.wave < len(self.spec.waves)
        if phase.terminal:
            assert isinstance(event, Rollback)
            assert phase is not Phase.ROLLED_BACK
            assert after.phase is Phase.ROLLED_BACK
        reverts = [a for a in actions if isinstance(a, Revert)]
        if reverts:
            assert after.phase in (Phase.FAILED, Phase.ROLLED_BACK)
            assert [r.wave for r in reverts] == [after.wave]
        for action in actions:
            if isinstance(action, OpenWave):
                assert action.wave == len(self.opened) == after.wave  # each wave once, in order
                self.opened.append(action.wave)
        if after.phase is Phase.COMPLETED and phase is not Phase.COMPLETED:
            assert after.wave == len(self.spec.waves) - 1
            assert self.opened[-1] == after.wave

    @rule(seconds=st.integers(0, 1000))
    def tick(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule(counts=wave_counts(), evidence=st.none() | health(), result=quality)
    def observe(
        self, counts: WaveCounts, evidence: HealthEvidence | None, result: GateResult | None
    ) -> None:
        self.apply(Observe(counts, evidence, result))

    @rule(total=st.integers(1, 20))
    def observe_a_clean_wave(self, total: int) -> None:
        self.apply(Observe(WaveCounts(total=total, committed=total), HEALTHY, NO_DRIFT))

    # Abort and Rollback end the walk, so they are drawn less often than the rest.
    @rule(command=st.sampled_from(COMMANDS))
    def command(self, command: Event) -> None:
        self.apply(command)

    @invariant()
    def state_is_coherent(self) -> None:
        state = self.rollout.state
        assert 0 <= state.wave < len(self.spec.waves)
        if state.phase is Phase.PAUSED:
            assert state.paused_from in RUNNING
        elif not state.phase.terminal:  # Abort and Rollback leave a stale paused_from
            assert state.paused_from is None
        if state.phase is Phase.SOAKING:
            assert state.soak_until is not None
        if state.phase is Phase.AWAITING_APPROVAL:
            assert self.spec.waves[state.wave].approval
        assert RolloutState.from_dict(state.to_dict()) == state


RolloutMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestRolloutMachine = RolloutMachine.TestCase
