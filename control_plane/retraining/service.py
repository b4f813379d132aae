"""Retraining triggers: drift policies in the database, evidence in, actions out.

Theory of operation: :meth:`RetrainingService.consider` takes a piece of
:class:`~control_plane.retraining.evidence.DriftEvidence`, finds the stored
policies for its model and cohort, and for each one: computes the
idempotency key, skips it if that key already fired, runs the pure
:func:`~control_plane.retraining.decision.decide`, and if it says fire,
claims the trigger in one transaction: lock the policy row, check the key
and the cooldown again (another replica may have fired meanwhile), insert
the trigger row (``(policy, key)`` is unique) and its audit entry. Then it
wakes the worker and returns: the actions run in the worker thread
(:mod:`control_plane.retraining.dispatch`), never in the caller's.

Cooldown is read from the policy's newest trigger that is not ``failed`` and
not manual: a trigger whose actions all failed did not start a retraining,
and a manual ``fire`` (wiring tests) must not silence the policy.

Commands run on the control plane's host, so a policy with a ``command``
action is accepted only when ``retraining.allow_commands`` is set and only
from an admin.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from control_plane.audit import audit
from control_plane.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from control_plane.retraining.actions import CommandAction, action_to_dict
from control_plane.retraining.decision import Decision, Reason, decide
from control_plane.retraining.dispatch import ACTOR, Dispatcher, Worker, initial_states
from control_plane.retraining.evidence import DriftEvidence
from control_plane.retraining.policy import DriftPolicy, parse_policy
from control_plane.store.retraining_port import RetrainingStore
from control_plane.store.retraining_records import (
    DriftPolicyRecord,
    TriggerRecord,
    TriggerStatus,
)

log = logging.getLogger("edgefleet.retraining")
#: Triggers whose creation starts a cooldown.
COOLING = (TriggerStatus.PENDING, TriggerStatus.FIRING, TriggerStatus.SUCCEEDED)


@dataclass(frozen=True)
class PolicyOutcome:
    policy: str
    fired: bool
    reason: Reason
    detail: str
    idempotency_key: str | None = None
    trigger_id: int | None = None
    cooldown_until: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        until = self.cooldown_until
        return {
            "policy": self.policy,
            "fired": self.fired,
            "reason": self.reason.value,
            "detail": self.detail,
            "idempotency_key": self.idempotency_key,
            "trigger_id": self.trigger_id,
            "cooldown_until": None if until is None else until.isoformat(),
        }


@dataclass(frozen=True)
class TriggerOutcome:
    """What ``consider`` did with one piece of evidence: one outcome per matching policy."""

    model: str
    cohort: str | None
    outcomes: tuple[PolicyOutcome, ...]

    @property
    def fired(self) -> bool:
        return any(o.fired for o in self.outcomes)

    @property
    def reason(self) -> Reason:
        if not self.outcomes:
            return Reason.NO_POLICY
        return Reason.FIRED if self.fired else self.outcomes[0].reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "cohort": self.cohort,
            "fired": self.fired,
            "reason": self.reason.value,
            "outcomes": [o.to_dict() for o in self.outcomes],
        }


@dataclass(frozen=True)
class AppliedPolicy:
    result: Literal["created", "unchanged", "updated"]
    policy: DriftPolicyRecord


def payload_of(
    policy: DriftPolicy, evidence: DriftEvidence, key: str, now: datetime, *, manual: bool
) -> dict[str, Any]:
    """The trigger document every action receives (the evidence inside)."""
    return {
        "apiVersion": "edgefleet/v1",
        "kind": "DriftTrigger",
        "policy": policy.name,
        "idempotency_key": key,
        "model": evidence.model,
        "release": evidence.release,
        "cohort": evidence.cohort,
        "canary_approval": policy.canary_approval,
        "manual": manual,
        "triggered_at": now.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
        "evidence": evidence.to_dict(),
    }


class RetrainingService:
    def __init__(
        self,
        store: RetrainingStore,
        clock: Callable[[], datetime],
        dispatcher: Dispatcher,
        *,
        allow_commands: bool = False,
        tick_s: float = 5.0,
    ) -> None:
        self.store, self.clock, self.dispatcher = store, clock, dispatcher
        self.allow_commands = allow_commands
        self.worker = Worker(dispatcher, tick_s)

    # -- policies ---------------------------------------------------------------------------
    def apply_policy(self, document: Any, actor: str, *, admin: bool = False) -> AppliedPolicy:
        """Create, leave unchanged, or update the policy a document describes."""
        policy = parse_policy(document)
        if any(isinstance(a, CommandAction) for a in policy.actions):
            if not self.allow_commands:
                raise InvalidInputError(
                    "spec.actions: command actions are off on this server "
                    "(set retraining.allow_commands)"
                )
            if not admin:
                raise PermissionDeniedError("a policy with a command action needs an admin token")
        now, digest, spec = self.clock(), policy.digest(), policy.to_dict()
        with self.store.transaction() as tx:
            stored = tx.get_policy(policy.name)
            if stored is not None and stored.spec_digest == digest:
                return AppliedPolicy("unchanged", stored)
            if stored is None:
                record = tx.add_policy(
                    DriftPolicyRecord(
                        policy.name, policy.model, policy.cohort, spec, digest, now, actor, now
                    )
                )
                result: Literal["created", "updated"] = "created"
            else:
                record = tx.update_policy(
                    policy.name,
                    model=policy.model,
                    cohort=policy.cohort,
                    spec=spec,
                    spec_digest=digest,
                    now=now,
                    expect_revision=stored.revision,
                )
                result = "updated"
            audit(
                tx,
                actor,
                f"retraining.policy_{result}",
                "drift_policy",
                policy.name,
                {"spec": spec["spec"]},
                now,
            )
        return AppliedPolicy(result, record)

    def get_policy(self, name: str) -> DriftPolicyRecord:
        record = self.store.get_policy(name)
        if record is None:
            raise NotFoundError(f"drift policy {name} not found")
        return record

    def list_policies(self, model: str | None = None) -> list[DriftPolicyRecord]:
        return self.store.list_policies(model)

    def delete_policy(self, name: str, actor: str) -> None:
        with self.store.transaction() as tx:
            tx.delete_policy(name)
            audit(tx, actor, "retraining.policy_deleted", "drift_policy", name, {}, self.clock())

    def list_triggers(
        self,
        *,
        policy: str | None = None,
        model: str | None = None,
        status: TriggerStatus | None = None,
        limit: int = 200,
    ) -> list[TriggerRecord]:
        statuses = None if status is None else [status]
        return self.store.list_triggers(policy=policy, model=model, statuses=statuses, limit=limit)

    def get_trigger(self, trigger_id: int) -> TriggerRecord:
        found = self.store.get_trigger(trigger_id)
        if found is None:
            raise NotFoundError(f"trigger {trigger_id} not found")
        return found

    # -- evidence ---------------------------------------------------------------------------
    def consider(self, evidence: DriftEvidence, now: datetime) -> TriggerOutcome:
        """Apply every matching policy to ``evidence``; fire those that say so (not waiting)."""
        outcomes = []
        for record in self.store.list_policies(evidence.model):
            policy = parse_policy(record.spec)
            if policy.matches(evidence.model, evidence.cohort):
                outcomes.append(self._consider(policy, evidence, now))
        if any(o.fired for o in outcomes):
            self.worker.wake()
        return TriggerOutcome(evidence.model, evidence.cohort, tuple(outcomes))

    def fire(
        self, name: str, evidence: DriftEvidence, actor: str, *, key: str | None = None
    ) -> PolicyOutcome:
        """Fire a policy's actions now, whatever its conditions and cooldown (a wiring test).

        The idempotency key still holds: the same evidence fires once unless
        ``key`` differs. A manual trigger does not start a cooldown.
        """
        policy = parse_policy(self.get_policy(name).spec)
        if evidence.model != policy.model:
            raise InvalidInputError(f"evidence.model {evidence.model!r} is not {policy.model!r}")
        now = self.clock()
        decision = Decision(True, Reason.FIRED, f"fired by hand by {actor}")
        outcome = self._claim(policy, evidence, now, decision, actor=actor, key=key)
        if outcome.fired:
            self.worker.wake()
        return outcome

    def _key(self, policy: DriftPolicy, evidence: DriftEvidence) -> str:
        return policy.key_for(
            evidence.model,
            evidence.release,
            evidence.cohort,
            evidence.window_start,
            evidence.window_end,
        )

    def _consider(
        self, policy: DriftPolicy, evidence: DriftEvidence, now: datetime
    ) -> PolicyOutcome:
        key = self._key(policy, evidence)
        if self.store.find_trigger(policy.name, key) is not None:
            return _already(policy.name, key)
        decision = _decide(self.store, policy, evidence, now)
        if not decision.fire:
            log.debug("policy %s skipped %s: %s", policy.name, key, decision.detail)
            return _skipped(policy.name, key, decision)
        return self._claim(policy, evidence, now, decision, actor=None, key=key)

    def _claim(
        self,
        policy: DriftPolicy,
        evidence: DriftEvidence,
        now: datetime,
        decision: Decision,
        *,
        actor: str | None,
        key: str | None,
    ) -> PolicyOutcome:
        manual = actor is not None
        key = key or self._key(policy, evidence)
        with self.store.transaction() as tx:
            try:
                tx.lock_policy(policy.name)  # replicas deciding on this policy take turns here
            except NotFoundError:
                return PolicyOutcome(policy.name, False, Reason.NO_POLICY, "policy was deleted")
            if tx.find_trigger(policy.name, key) is not None:
                return _already(policy.name, key)
            if not manual:
                decision = _decide(tx, policy, evidence, now)  # again, under the policy's lock
                if not decision.fire:
                    return _skipped(policy.name, key, decision)
            payload = payload_of(policy, evidence, key, now, manual=manual)
            actions = initial_states([action_to_dict(a) for a in policy.actions], now)
            try:
                record = tx.add_trigger(
                    TriggerRecord(
                        policy.name,
                        key,
                        evidence.model,
                        evidence.release,
                        evidence.cohort,
                        TriggerStatus.PENDING,
                        manual,
                        now,
                        now,
                        now,
                        policy.lease_s,
                        payload,
                        actions,
                    )
                )
            except ConflictError:
                return _already(policy.name, key)
            audit(
                tx,
                actor or ACTOR,
                "retraining.trigger",
                "retraining_trigger",
                str(record.id),
                {
                    "policy": policy.name,
                    "idempotency_key": key,
                    "manual": manual,
                    "reason": decision.detail,
                    "actions": [a.label() for a in policy.actions],
                    "canary_approval": policy.canary_approval,
                    "evidence": payload["evidence"],
                },
                now,
            )
        log.info("policy %s fired %s (trigger %d)", policy.name, key, record.id)
        return PolicyOutcome(policy.name, True, Reason.FIRED, decision.detail, key, record.id)

    # -- the worker -------------------------------------------------------------------------
    def tick(self, now: datetime | None = None) -> int:
        """Attempt the due actions in this thread (tests and one-shot tools)."""
        return self.dispatcher.tick(now)

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()
        self.dispatcher.close()


def _already(policy: str, key: str) -> PolicyOutcome:
    return PolicyOutcome(policy, False, Reason.ALREADY_FIRED, f"already fired for key {key}", key)


def _decide(
    store: RetrainingStore, policy: DriftPolicy, evidence: DriftEvidence, now: datetime
) -> Decision:
    """The policy's decision, its cooldown counted from its last automatic trigger."""
    last = store.last_trigger(policy.name, statuses=COOLING, manual=False)
    return decide(policy, evidence, None if last is None else last.created_at, now)


def _skipped(policy: str, key: str, decision: Decision) -> PolicyOutcome:
    return PolicyOutcome(
        policy, False, decision.reason, decision.detail, key, cooldown_until=decision.cooldown_until
    )


__all__ = [
    "AppliedPolicy",
    "PolicyOutcome",
    "RetrainingService",
    "TriggerOutcome",
    "payload_of",
]
