"""One simulated device: the agent's update protocol without its disk, runtime or threads.

Theory of operation: a :class:`SimDevice` keeps what a real agent keeps
between messages (``agent.trustgate``, ``agent.journal``, ``agent.recorder``):
a :class:`~fleetcore.trust.TrustState`, the update in progress, the
committed, previous and active releases, and the next report sequence
number. :meth:`SimDevice.consider` takes the raw bytes of a desired-state
message and decides exactly as the agent's updater does:

* an exact redelivery of the assignment in progress is ignored;
* otherwise the manifest and then the assignment are verified with
  :class:`~fleetcore.trust.TrustedSet` built from the pinned root and a copy
  of the trust state (``TrustGate.verify``); a refusal yields one ``rejected``
  report per document, the state moves only when the document is accepted;
* a newer assignment of the release being installed is adopted silently; any
  other supersedes the update in progress (``failed``/``reverted``, reason
  ``superseded``);
* the release that is committed and active commits at once (the agent's
  ``ALREADY_ACTIVE``: ``notified → committed``); a release whose blob is still
  kept (a revert to the previous committed one) runs the workflow without
  download, delays or injected faults; anything else runs the whole workflow.

The result is a :class:`Plan`: the workflow's steps, each a state to enter
(and a report to send) after a delay, with the download and the connection
drop of a ``flap`` device as actions the worker carries out. :meth:`enter`
builds the report the agent's ``Recorder.report`` would send: ``target``,
``assignment_sequence``, ``active`` (what the slot pointer serves at that
moment: the new release from ``probation`` on), ``previous`` (the committed
release while the new one is activating or on probation, otherwise the
previous committed one) and a ``seq`` one above the last.

Behaviours: ``success``; ``slow`` (waits ``slow_s`` while downloading);
``smoke_fail`` (``failed``, reason ``smoke``, after ``smoke_test``);
``offline`` (enrolled, never connects: the worker never starts it); ``flap``
(drops its MQTT connection right after reporting ``downloading`` and comes
back ``flap_down_s`` later; reports made meanwhile wait, as in the agent's
outbox). Nothing here does I/O.
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum

from agent.workflow import ACTIVATED, IN_PROGRESS
from fleetcore import __version__
from fleetcore.envelope import Envelope
from fleetcore.errors import EdgefleetError
from fleetcore.metadata import ArtifactInfo
from fleetcore.protocol import DesiredState, Installed, StatusReport, UpdateState
from fleetcore.trust import TrustedSet, TrustState

S = UpdateState
#: Refused documents remembered, as the agent does (``updater.REMEMBER_REJECTED``).
REMEMBER_REJECTED = 16


class Behaviour(str, Enum):
    SUCCESS = "success"
    SLOW = "slow"
    SMOKE_FAIL = "smoke_fail"
    OFFLINE = "offline"
    FLAP = "flap"


class Action(str, Enum):
    REPORT = "report"  # enter the step's state and send its report
    DOWNLOAD = "download"  # fetch and check the artifact, then go on
    DROP = "drop"  # report, then drop the MQTT connection for flap_down_s


@dataclass(frozen=True)
class Timing:
    """Delays of the simulated workflow, seconds."""

    step_delay_s: float = 0.0  # before every transition, every device
    slow_s: float = 5.0  # added to the download of a "slow" device
    flap_down_s: float = 2.0  # how long a "flap" device stays disconnected


@dataclass(frozen=True)
class Step:
    delay_s: float
    action: Action
    state: UpdateState | None = None
    reason: str | None = None
    message: str | None = None


@dataclass
class Update:
    sequence: int
    assignment: bytes
    target: Installed
    artifact: ArtifactInfo


@dataclass
class Plan:
    """Steps still to carry out for one update; ``generation`` changes when superseded."""

    generation: int
    steps: deque[Step] = field(default_factory=deque)


@dataclass(frozen=True)
class Outcome:
    """What :meth:`SimDevice.consider` decided: reports to send now, and maybe a new plan."""

    reports: list[StatusReport]
    plan: Plan | None = None
    verdict: str = "ignored"  # ignored | rejected | accepted | adopted


def _now() -> datetime:
    return datetime.now(timezone.utc)


class SimDevice:
    def __init__(
        self, device_id: str, root: bytes, behaviour: Behaviour, timing: Timing | None = None
    ) -> None:
        self.id = device_id
        self.root = root
        self.behaviour = behaviour
        self.timing = timing or Timing()
        self.trust = TrustState()
        self.state = S.IDLE
        self.update: Update | None = None
        self.committed: Installed | None = None
        self.previous: Installed | None = None
        self.active: Installed | None = None
        self.kept: set[str] = set()  # blobs on "disk": committed and previous
        self.rejected: list[str] = []
        self.seq = 0
        self.generation = 0
        self.committed_at: float | None = None  # wall time of the last commit report

    # -- desired states ----------------------------------------------------------------

    def consider(self, document: bytes) -> Outcome:
        now = _now()
        try:
            desired = DesiredState.decode(document)
        except EdgefleetError as exc:
            return self._refuse(document, None, exc)
        upd = self.update
        if upd is not None and desired.assignment == upd.assignment:
            return Outcome([])  # a redelivery of the update in hand
        trusted = TrustedSet(self.root, device_id=self.id, state=copy.deepcopy(self.trust))
        try:
            release = trusted.verify_release(desired.manifest, now)
            assignment = trusted.verify_assignment(desired.assignment, release, now)
        except EdgefleetError as exc:
            return self._refuse(document, desired, exc)
        self.trust = trusted.state
        manifest = release.manifest
        target = Installed(manifest.model, manifest.release, manifest.artifact.sha256)
        new = Update(assignment.sequence, desired.assignment, target, manifest.artifact)
        reports = []
        if self.state in IN_PROGRESS and upd is not None:
            if upd.target == target:  # the same release under a newer sequence: keep going
                upd.sequence, upd.assignment = new.sequence, new.assignment
                return Outcome([], verdict="adopted")
            exit_state = S.REVERTED if self.state in ACTIVATED else S.FAILED
            message = f"superseded by assignment {new.sequence}"
            reports.append(self.enter(exit_state, "superseded", message))
        self.update = new
        self.generation += 1
        reports.append(self.enter(S.NOTIFIED))
        return Outcome(reports, self._plan(new), "accepted")

    def _refuse(
        self, document: bytes, desired: DesiredState | None, exc: EdgefleetError
    ) -> Outcome:
        import hashlib

        digest = hashlib.sha256(document).hexdigest()
        if digest in self.rejected:
            return Outcome([], verdict="rejected")
        self.rejected = [*self.rejected, digest][-REMEMBER_REJECTED:]
        sequence = None if desired is None else _unverified_sequence(desired.assignment)
        message = " ".join(str(exc).split())[:2000]
        report = self._report(S.REJECTED, exc.check, message, target=None, sequence=sequence)
        if self.state not in IN_PROGRESS:
            self.state = S.REJECTED
        return Outcome([report], verdict="rejected")

    def _plan(self, upd: Update) -> Plan:
        plan = Plan(self.generation)
        gap = self.timing.step_delay_s
        target = upd.target
        if self.committed == target and self.active == target:
            plan.steps.append(Step(gap, Action.REPORT, S.COMMITTED))  # ALREADY_ACTIVE
            return plan
        known = target.sha256 in self.kept  # a revert to a release it ran before
        download = 0.0 if known or self.behaviour is not Behaviour.SLOW else self.timing.slow_s
        flap = self.behaviour is Behaviour.FLAP and not known
        plan.steps.append(Step(gap, Action.DROP if flap else Action.REPORT, S.DOWNLOADING))
        if not known:
            plan.steps.append(Step(download, Action.DOWNLOAD))
        for state in (S.VERIFYING, S.STAGED, S.SMOKE_TEST):
            plan.steps.append(Step(gap, Action.REPORT, state))
        if self.behaviour is Behaviour.SMOKE_FAIL and not known:
            why = "smoke test failed: outputs differ from the signed vectors (simulated)"
            plan.steps.append(Step(gap, Action.REPORT, S.FAILED, "smoke", why))
            return plan
        for state in (S.ACTIVATING, S.PROBATION, S.COMMITTED):
            plan.steps.append(Step(gap, Action.REPORT, state))
        return plan

    # -- transitions -----------------------------------------------------------------------

    def enter(
        self, state: UpdateState, reason: str | None = None, message: str | None = None
    ) -> StatusReport:
        """Move to ``state`` and return the report announcing it."""
        upd = self.update
        if state is S.PROBATION and upd is not None:
            self.active = upd.target  # activating moved the slot pointer
        elif state is S.COMMITTED and upd is not None:
            target = upd.target
            if self.committed is not None and self.committed != target:
                self.previous = self.committed
            self.committed = self.active = target
            self.trust.committed.setdefault(target.model, set()).add(target.release)
            self.kept = {r.sha256 for r in (self.committed, self.previous) if r is not None}
        elif state is S.REVERTED:
            self.active = self.committed
        self.state = state
        return self._report(state, reason, message)

    def fail(self, reason: str, message: str) -> StatusReport:
        """End the update in progress: failed before activation, reverted after it."""
        self.generation += 1
        return self.enter(S.REVERTED if self.state in ACTIVATED else S.FAILED, reason, message)

    def _report(
        self,
        state: UpdateState,
        reason: str | None,
        message: str | None,
        **override: object,
    ) -> StatusReport:
        upd = self.update
        fallback = self.committed if state in ACTIVATED else self.previous
        self.seq += 1
        target = override.get("target", None if upd is None else upd.target)
        sequence = override.get("sequence", None if upd is None else upd.sequence)
        assert target is None or isinstance(target, Installed)
        assert sequence is None or isinstance(sequence, int)
        return StatusReport(
            device=self.id,
            seq=self.seq,
            time=_now().replace(microsecond=0),
            state=state,
            target=target,
            assignment_sequence=sequence,
            active=self.active,
            previous=fallback,
            reason=reason,
            message=message,
            agent_version=__version__,
        )


def _unverified_sequence(envelope: bytes) -> int | None:
    """The sequence a refused assignment claims, for the report only (as the agent does)."""
    try:
        raw = Envelope.from_bytes(envelope).signed.get("sequence")
    except EdgefleetError:
        return None
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1 else None


__all__ = [
    "Action",
    "Behaviour",
    "Outcome",
    "Plan",
    "SimDevice",
    "Step",
    "Timing",
    "Update",
]
