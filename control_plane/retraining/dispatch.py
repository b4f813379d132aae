"""Firing triggers: attempts, retries with backoff, leases, and the worker thread.

Theory of operation: a trigger row is created ``pending`` (by
:meth:`~control_plane.retraining.service.RetrainingService.consider`), with a
snapshot of its policy's actions. :meth:`Dispatcher.tick` leases the
triggers that are due (:meth:`claim_triggers`: at most one worker holds a
trigger at a time, across replicas), attempts each action that is due once,
and writes the outcome of every attempt, with its audit entry, before the
next one. An action that fails in a retryable way waits
``min(max_backoff, backoff * 2**(n-1))``, scaled by a random factor in
[0.5, 1] (jitter, so many triggers failing together do not retry in step),
or longer if the service asked (``Retry-After``); after ``attempts`` tries,
or on a refusal (most 4xx), it has failed for good. The trigger succeeds when
every action has, and fails when all are settled and one failed.

Nobody waits for this: the caller of ``consider`` returns once the row is
committed and :meth:`Worker.wake` nudges the worker thread, which otherwise
ticks every ``tick_s`` seconds. That same periodic tick resumes triggers
after a restart, and a trigger whose worker died mid-attempt is taken over
once its lease (its longest action timeout plus a minute) expires. Such a
takeover may repeat the attempt that was in flight: delivery is at least
once, and receivers deduplicate by the idempotency key.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx

from control_plane.audit import audit
from control_plane.errors import StateError
from control_plane.retraining.actions import Delivery, parse_action
from control_plane.retraining.adapters import Attempt, attempt
from control_plane.store.retraining_port import RetrainingStore
from control_plane.store.retraining_records import TriggerRecord, TriggerStatus

log = logging.getLogger("edgefleet.retraining")
ACTOR = "retraining"


def backoff_s(delivery: Delivery, attempts: int, rng: random.Random) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt."""
    delay = min(delivery.max_backoff_s, delivery.backoff_s * 2 ** max(0, attempts - 1))
    return float(delay * rng.uniform(0.5, 1.0))


def advance(
    state: dict[str, Any], result: Attempt, delivery: Delivery, now: datetime, rng: random.Random
) -> None:
    """Record one attempt's ``result`` in an action's ``state``."""
    state["attempts"] += 1
    if result.ok:
        state.update(status="succeeded", last_error=None, detail=result.detail)
        return
    state["last_error"] = result.detail
    if not result.retryable or state["attempts"] >= delivery.attempts:
        state["status"] = "failed"
        return
    wait = backoff_s(delivery, state["attempts"], rng)
    if result.retry_after_s is not None:
        wait = min(max(wait, result.retry_after_s), 3600.0)
    state["next_at"] = (now + timedelta(seconds=wait)).isoformat()


def summarize(states: list[dict[str, Any]], now: datetime) -> tuple[TriggerStatus, datetime]:
    """The trigger's status and next attempt time from its actions' states."""
    open_ = [s for s in states if s["status"] == "pending"]
    if open_:
        return TriggerStatus.PENDING, min(datetime.fromisoformat(s["next_at"]) for s in open_)
    if all(s["status"] == "succeeded" for s in states):
        return TriggerStatus.SUCCEEDED, now
    return TriggerStatus.FAILED, now


def initial_states(actions: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Fresh per-action states for a new trigger, from normalised action documents."""
    return [
        {
            "name": a["name"],
            "type": a["type"],
            "spec": a,
            "status": "pending",
            "attempts": 0,
            "last_error": None,
            "next_at": now.isoformat(),
        }
        for a in actions
    ]


def _last_error(states: list[dict[str, Any]]) -> str | None:
    errors = [f"{s['name']}: {s['last_error']}" for s in states if s.get("last_error")]
    return "; ".join(errors) or None


class Dispatcher:
    """Attempts the actions of due triggers; one instance per process."""

    def __init__(
        self,
        store: RetrainingStore,
        clock: Callable[[], datetime],
        owner: str,
        *,
        client: httpx.Client | None = None,
        environ: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        batch: int = 20,
    ) -> None:
        self.store, self.clock, self.owner, self.batch = store, clock, owner, batch
        self._client = client or httpx.Client(follow_redirects=False)
        self._environ = environ
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security

    def tick(self, now: datetime | None = None) -> int:
        """Attempt what is due; return how many triggers were worked on."""
        claimed = self.store.claim_triggers(self.owner, now or self.clock(), self.batch)
        for trigger in claimed:
            try:
                self._run(trigger)
            except StateError as exc:  # lease lost (we were too slow): the new holder goes on
                log.warning("trigger %s: %s", trigger.id, exc)
        return len(claimed)

    def _run(self, trigger: TriggerRecord) -> None:
        environ = os.environ if self._environ is None else self._environ
        states = copy.deepcopy(trigger.actions)
        revision, attempts = trigger.revision, trigger.attempts
        for index, state in enumerate(states):
            if state["status"] != "pending" or datetime.fromisoformat(state["next_at"]) > (
                self.clock()
            ):
                continue
            action = parse_action(state["spec"], f"trigger.actions[{index}]", index)
            result = attempt(action, trigger.payload, self._client, environ)
            now = self.clock()
            advance(state, result, action.delivery, now, self._rng)
            attempts += 1
            status, next_at = summarize(states, now)
            # Each attempt is recorded before the next one, with its audit entry, so a
            # crash loses at most the attempt in flight.
            with self.store.transaction() as tx:
                saved = tx.save_trigger(
                    trigger.id,
                    owner=self.owner,
                    expect_revision=revision,
                    status=status if status.finished else TriggerStatus.FIRING,
                    actions=states,
                    attempts=attempts,
                    last_error=_last_error(states),
                    next_attempt_at=next_at,
                    now=now,
                    release_lease=status.finished,
                    lease_until=now + timedelta(seconds=trigger.lease_s),
                )
                audit(
                    tx,
                    ACTOR,
                    "retraining.attempt",
                    "retraining_trigger",
                    str(trigger.id),
                    {
                        "policy": trigger.policy,
                        "idempotency_key": trigger.idempotency_key,
                        "action": action.label(),
                        "attempt": state["attempts"],
                        "ok": result.ok,
                        "retryable": result.retryable,
                        "detail": result.detail,
                        "action_status": state["status"],
                        "trigger_status": status.value,
                        "evidence": trigger.payload.get("evidence"),
                    },
                    now,
                )
            revision = saved.revision
            log.info(
                "trigger %s %s attempt %d: %s",
                trigger.id,
                action.label(),
                state["attempts"],
                result.detail,
            )
            if status.finished:
                return
        # Retries remain: hand the trigger back, due at its earliest retry.
        now = self.clock()
        status, next_at = summarize(states, now)
        self.store.save_trigger(
            trigger.id,
            owner=self.owner,
            expect_revision=revision,
            status=status,
            actions=states,
            attempts=attempts,
            last_error=trigger.last_error if attempts == trigger.attempts else _last_error(states),
            next_attempt_at=next_at,
            now=now,
            release_lease=True,
        )

    def close(self) -> None:
        self._client.close()


class Worker:
    """A daemon thread that ticks the dispatcher when woken and every ``tick_s`` seconds."""

    def __init__(self, dispatcher: Dispatcher, tick_s: float) -> None:
        self.dispatcher, self.tick_s = dispatcher, tick_s
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name="retraining-worker", daemon=True
            )
            self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.tick_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                while self.dispatcher.tick() and not self._stop.is_set():
                    pass  # a full batch may leave more due: go on until none is
            except Exception:  # a database hiccup: try again next round
                log.exception("firing retraining triggers failed")


__all__ = ["ACTOR", "Dispatcher", "Worker", "advance", "backoff_s", "initial_states", "summarize"]
