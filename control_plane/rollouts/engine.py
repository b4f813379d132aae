"""The rollout engine: a pure state machine, ``apply(event, now) -> actions``.

Theory of operation (after h11): :data:`TRANSITIONS` maps ``(phase, event
type)`` to a handler and is the only place that says which moves exist. An
event that is not in the table raises :class:`IllegalEventError` and leaves
the state unchanged; a handler computes the new state on a copy and commits it
only when it returns, so a handler that raises changes nothing either. The
engine reads no clock, database or socket: the driver
(:mod:`control_plane.rollouts.service`) feeds it events with the time, persists
:attr:`Rollout.state` and carries out the returned actions.

The waves::

    created ─Start→ progressing ─(wave finished, gates pass)→ soaking ─(soak over,
    gates pass)→ progressing (next wave) … → completed

``awaiting_approval`` stands before a wave that asks for approval
(``Promote`` opens it); ``paused`` remembers where it paused and ``Resume``
goes back there. A gate that fails acts by ``on_failure``: ``pause``,
``revert_wave`` (the failing wave goes back to the previous release; the
rollout ends ``failed``) or ``revert_all``. Inconclusive gates wait up to
the spec's timeout, then count as ``pass``, ``fail`` or ``pause``. In a dry run
every gate is evaluated and recorded, and nothing acts on it.

Terminal phases: ``completed``, ``aborted``, ``failed`` and ``rolled_back``;
``Rollback`` also works from the first three (it reverts every device the
rollout touched).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from control_plane.rollouts.events import (
    ACTIVE,
    TERMINAL,
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
    RevertScope,
    Rollback,
    RolloutState,
    Start,
)
from control_plane.rollouts.gates import (
    GateResult,
    Outcome,
    health_gate,
    install_gate,
)
from control_plane.rollouts.spec import (
    AfterInconclusive,
    Gates,
    OnFailure,
    QualityMode,
    RolloutSpec,
)

Handler = Callable[["Rollout", Any, datetime], list[Action]]


class Rollout:
    """One rollout's state and the rules that move it."""

    def __init__(self, spec: RolloutSpec, state: RolloutState | None = None) -> None:
        self.spec = spec
        self.state = state or RolloutState()

    @property
    def phase(self) -> Phase:
        return self.state.phase

    def apply(self, event: Event, now: datetime) -> list[Action]:
        handler = TRANSITIONS.get((self.state.phase, type(event)))
        if handler is None:
            raise IllegalEventError(
                f"cannot {type(event).__name__.lower()} a rollout that is {self.state.phase.value}"
            )
        saved = copy.deepcopy(self.state)
        try:
            return handler(self, event, now)
        except BaseException:
            self.state = saved
            raise

    # -- handlers --------------------------------------------------------------------------

    def _start(self, _: Start, now: datetime) -> list[Action]:
        actions = self._open(0, now)
        if self.spec.paused:
            actions += self._pause(Pause("spec", "created paused (spec.paused)"), now)
        return actions

    def _observe(self, event: Observe, now: datetime) -> list[Action]:  # noqa: PLR0911
        state = self.state
        gates = self.spec.gates_of(state.wave)
        results = self._evaluate(gates, event)
        state.gates = [r.to_dict() for r in results]
        install = results[0]
        if state.phase is Phase.PROGRESSING:
            if install.outcome is Outcome.FAIL and not self.spec.dry_run:
                return self._failed(results, now, "install gate failed")
            if not event.counts.finished:
                return []
            # Every device of the wave has an outcome: soak, then judge the rest.
            soak = self.spec.waves[state.wave].soak_s
            state.phase = Phase.SOAKING
            state.soak_until = now + timedelta(seconds=soak)
            evidence = {"wave": state.wave, "counts": event.counts.to_dict(), "soak_s": soak}
            return [Record("wave.installed", evidence)]
        # Soaking: a failure acts at once; a pass waits for the soak to end.
        outcome = _combine(results)
        if outcome is Outcome.FAIL:
            failed = [r.gate for r in results if r.outcome is Outcome.FAIL]
            return self._failed(results, now, f"{' and '.join(failed)} gate failed",
                                self._policy(failed, gates))  # fmt: skip
        assert state.soak_until is not None
        if now < state.soak_until:
            return []
        if outcome is Outcome.INCONCLUSIVE:
            return self._inconclusive(results, gates, now)
        return self._passed(results, now)

    def _policy(self, failed: list[str], gates: Gates) -> OnFailure:
        """What a failure does: ``on_failure``, unless only the quality gate failed.

        A failing quality gate acts by its mode: ``pause`` pauses whatever
        ``on_failure`` says; ``revert`` reverts (the whole rollout under
        ``revert_all``, else the wave).
        """
        policy = self.spec.on_failure
        if failed != ["quality"]:
            return policy
        if gates.quality.mode is QualityMode.PAUSE:
            return OnFailure.PAUSE
        return policy if policy is not OnFailure.PAUSE else OnFailure.REVERT_WAVE

    def _evaluate(self, gates: Gates, event: Observe) -> list[GateResult]:
        results = [install_gate(gates.install, event.counts)]
        if gates.health is not None:
            results.append(health_gate(gates.health, event.health))
        if gates.quality.mode is not QualityMode.OFF:
            quality = event.quality or GateResult(
                "quality", Outcome.INCONCLUSIVE, "no quality evidence"
            )
            if gates.quality.mode is QualityMode.OBSERVE and quality.outcome is not Outcome.PASS:
                quality = GateResult(
                    "quality", Outcome.PASS, f"observe only: {quality.detail}", quality.values
                )
            results.append(quality)
        return results

    def _inconclusive(self, results: list[GateResult], gates: Gates, now: datetime) -> list[Action]:
        state = self.state
        if state.inconclusive_since is None:
            state.inconclusive_since = now
            return [Record("gates.inconclusive", self._evidence(results))]
        if now - state.inconclusive_since < timedelta(seconds=gates.inconclusive_timeout_s):
            return []
        then = gates.after_inconclusive
        evidence = self._evidence(results) | {"after_inconclusive": then.value}
        if then is AfterInconclusive.PASS:
            return [Record("gates.inconclusive_timeout", evidence), *self._passed(results, now)]
        if then is AfterInconclusive.FAIL:
            timeout = Record("gates.inconclusive_timeout", evidence)
            return [timeout, *self._failed(results, now, "gates stayed inconclusive")]
        if self.spec.dry_run:  # nothing acts on a gate in a dry run, a timeout included
            evidence["dry_run"] = True
            return [Record("dry_run.would_pause", evidence), *self._passed(results, now)]
        return [
            Record("gates.inconclusive_timeout", evidence),
            *self._pause(Pause("engine", "gates stayed inconclusive"), now),
        ]

    def _passed(self, results: list[GateResult], now: datetime) -> list[Action]:
        record = Record("wave.passed", self._evidence(results))
        return [record, *self._advance(now)]

    def _advance(self, now: datetime) -> list[Action]:
        state = self.state
        if state.wave + 1 >= len(self.spec.waves):
            state.phase = Phase.COMPLETED
            state.reason = state.soak_until = None
            return [Record("rollout.completed", {"waves": len(self.spec.waves)})]
        return self._open(state.wave + 1, now)

    def _open(self, wave: int, now: datetime) -> list[Action]:
        state = self.state
        state.wave = wave
        state.soak_until = state.inconclusive_since = None
        state.gates = []
        if self.spec.waves[wave].approval and state.phase is not Phase.AWAITING_APPROVAL:
            state.phase = Phase.AWAITING_APPROVAL
            state.wave_opened_at = None
            return [Record("wave.awaiting_approval", {"wave": wave})]
        state.phase = Phase.PROGRESSING
        state.wave_opened_at = now
        return [OpenWave(wave), Record("wave.opened", {"wave": wave})]

    def _failed(
        self,
        results: list[GateResult],
        now: datetime,
        why: str,
        policy: OnFailure | None = None,
    ) -> list[Action]:
        state = self.state
        policy = policy or self.spec.on_failure
        evidence = self._evidence(results) | {"on_failure": policy.value}
        if self.spec.dry_run:
            # Nothing acts on a gate in a dry run: record what would have happened, go on.
            evidence["dry_run"] = True
            return [Record(f"dry_run.would_{policy.value}", evidence), *self._advance(now)]
        record = Record("wave.failed", evidence)
        if policy is OnFailure.PAUSE:
            return [record, *self._pause(Pause("engine", why), now)]
        state.phase = Phase.FAILED
        state.reason = why
        scope = RevertScope.WAVE if policy is OnFailure.REVERT_WAVE else RevertScope.ALL
        return [record, Revert(scope, state.wave)]

    def _evidence(self, results: list[GateResult]) -> dict[str, Any]:
        return {"wave": self.state.wave, "gates": [r.to_dict() for r in results]}

    def _pause(self, event: Pause, _: datetime) -> list[Action]:
        state = self.state
        state.paused_from = state.phase
        state.phase = Phase.PAUSED
        state.reason = event.reason
        return [Record("rollout.paused", {"by": event.actor, "reason": event.reason})]

    def _resume(self, event: Resume, now: datetime) -> list[Action]:
        state = self.state
        back = state.paused_from or Phase.PROGRESSING
        state.phase, state.paused_from, state.reason = back, None, None
        state.inconclusive_since = None
        return [Record("rollout.resumed", {"by": event.actor, "phase": back.value})]

    def _promote(self, event: Promote, now: datetime) -> list[Action]:
        state = self.state
        record = Record(
            "rollout.promoted", {"by": event.actor, "wave": state.wave, "from": state.phase.value}
        )
        if Phase.AWAITING_APPROVAL in (state.phase, state.paused_from):
            state.phase, state.paused_from, state.reason = Phase.AWAITING_APPROVAL, None, None
            return [record, *self._open(state.wave, now)]
        state.paused_from = None
        state.reason = None
        if state.phase is Phase.PAUSED:
            state.phase = Phase.PROGRESSING  # so an approval wave waits again
        return [record, *self._advance(now)]

    def _abort(self, event: Abort, _: datetime) -> list[Action]:
        state = self.state
        state.phase = Phase.ABORTED
        state.reason, state.paused_from = event.reason, None
        return [Record("rollout.aborted", {"by": event.actor, "reason": event.reason})]

    def _rollback(self, event: Rollback, _: datetime) -> list[Action]:
        state = self.state
        state.phase = Phase.ROLLED_BACK
        state.reason, state.paused_from = event.reason, None
        record = Record("rollout.rolled_back", {"by": event.actor, "reason": event.reason})
        return [record, Revert(RevertScope.ALL, state.wave)]


def _combine(results: list[GateResult]) -> Outcome:
    outcomes = {r.outcome for r in results}
    if Outcome.FAIL in outcomes:
        return Outcome.FAIL
    if Outcome.INCONCLUSIVE in outcomes:
        return Outcome.INCONCLUSIVE
    return Outcome.PASS


_RUNNING = (Phase.PROGRESSING, Phase.SOAKING, Phase.AWAITING_APPROVAL)

#: Every legal move; anything else raises IllegalEventError.
TRANSITIONS: dict[tuple[Phase, type[Any]], Handler] = {
    (Phase.CREATED, Start): Rollout._start,
    (Phase.PROGRESSING, Observe): Rollout._observe,
    (Phase.SOAKING, Observe): Rollout._observe,
    **{(phase, Pause): Rollout._pause for phase in _RUNNING},
    (Phase.PAUSED, Resume): Rollout._resume,
    **{(phase, Promote): Rollout._promote for phase in (*_RUNNING, Phase.PAUSED)},
    **{(phase, Abort): Rollout._abort for phase in (*_RUNNING, Phase.PAUSED, Phase.CREATED)},
    **{
        (phase, Rollback): Rollout._rollback
        for phase in (*_RUNNING, Phase.PAUSED, Phase.COMPLETED, Phase.ABORTED, Phase.FAILED)
    },
}


__all__ = [
    "ACTIVE",
    "TERMINAL",
    "TRANSITIONS",
    "Abort",
    "Action",
    "Event",
    "IllegalEventError",
    "Observe",
    "OpenWave",
    "Pause",
    "Phase",
    "Promote",
    "Record",
    "Resume",
    "Revert",
    "RevertScope",
    "Rollback",
    "Rollout",
    "RolloutState",
    "Start",
]
