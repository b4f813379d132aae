"""The retraining service on a real (migrated) SQLite database, actions against a real server."""

from __future__ import annotations

import random
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from control_plane.errors import InvalidInputError, PermissionDeniedError
from control_plane.retraining import Reason, RetrainingService
from control_plane.retraining.actions import Delivery
from control_plane.retraining.dispatch import backoff_s
from control_plane.store import TriggerStatus
from tests.unit.control_plane.retraining.support import (
    Clock,
    database,
    evidence,
    policy_doc,
    receiver,
    service,
)


def _hook(url: str, **extra: object) -> dict[str, object]:
    return {"type": "webhook", "url": f"{url}/hook", "backoff": "10s", "max_backoff": "1m",
            "attempts": 4, **extra}  # fmt: skip


def _settle(svc: RetrainingService, clock: Clock, rounds: int = 10) -> None:
    """Tick, moving the clock past each backoff, until nothing is due."""
    for _ in range(rounds):
        svc.tick()
        clock.advance(minutes=2)


def test_apply_is_idempotent_and_audited(tmp_path: Path) -> None:
    svc = service(database(tmp_path), Clock())
    assert svc.apply_policy(policy_doc(), "alice").result == "created"
    assert svc.apply_policy(policy_doc(), "alice").result == "unchanged"
    updated = svc.apply_policy(policy_doc(cooldown="12h"), "bob")
    assert updated.result == "updated" and updated.policy.revision == 1
    actions = [e.action for e in svc.store.list_audit(object_type="drift_policy")]
    assert sorted(actions) == ["retraining.policy_created", "retraining.policy_updated"]


def test_command_actions_need_the_setting_and_an_admin(tmp_path: Path) -> None:
    doc = policy_doc(actions=[{"type": "command", "argv": ["true"]}])
    url = database(tmp_path)
    off = service(url, Clock())
    with pytest.raises(InvalidInputError, match="allow_commands"):
        off.apply_policy(doc, "alice", admin=True)
    on = service(url, Clock(), allow_commands=True)
    with pytest.raises(PermissionDeniedError):
        on.apply_policy(doc, "alice")
    assert on.apply_policy(doc, "root", admin=True).result == "created"


def test_fires_once_retries_with_backoff_and_audits_every_attempt(tmp_path: Path) -> None:
    clock = Clock()
    with receiver([503, 500]) as server:
        svc = service(database(tmp_path), clock, environ={"HOOK": "s3cret-value"})
        svc.apply_policy(
            policy_doc(actions=[_hook(server.url, headers_from_env={"X-Token": "HOOK"})]), "alice"
        )
        outcome = svc.consider(evidence(), clock())
        assert outcome.fired and outcome.reason is Reason.FIRED
        (result,) = outcome.outcomes
        assert result.idempotency_key == "sensor-drift-sensor-3-20250301T10"
        trigger = svc.get_trigger(result.trigger_id or 0)
        assert trigger.status is TriggerStatus.PENDING and trigger.attempts == 0

        assert svc.tick() == 1  # first attempt: 503
        trigger = svc.get_trigger(trigger.id)
        assert trigger.status is TriggerStatus.PENDING and trigger.attempts == 1
        assert trigger.last_error is not None and "HTTP 503" in trigger.last_error
        wait = trigger.next_attempt_at - clock()
        assert timedelta(seconds=5) <= wait <= timedelta(seconds=10)  # 10 s with jitter
        assert svc.tick() == 0  # not due yet
        _settle(svc, clock)
    trigger = svc.get_trigger(trigger.id)
    assert trigger.status is TriggerStatus.SUCCEEDED and trigger.attempts == 3
    assert [r.headers["idempotency-key"] for r in server.requests] == [result.idempotency_key] * 3
    entries = svc.store.list_audit(object_type="retraining_trigger")
    assert sorted(e.action for e in entries) == ["retraining.attempt"] * 3 + ["retraining.trigger"]
    assert all(e.change["evidence"]["model"] == "sensor" for e in entries)
    assert "s3cret-value" not in repr([e.change for e in entries])


def test_a_refusal_is_not_retried_and_attempts_are_bounded(tmp_path: Path) -> None:
    clock = Clock()
    with receiver([400, 503, 503, 503, 503]) as server:
        svc = service(database(tmp_path), clock)
        svc.apply_policy(
            policy_doc(actions=[_hook(server.url, name="refused"), _hook(server.url, name="down")]),
            "alice",
        )
        trigger_id = svc.consider(evidence(), clock()).outcomes[0].trigger_id or 0
        _settle(svc, clock)
    trigger = svc.get_trigger(trigger_id)
    assert trigger.status is TriggerStatus.FAILED
    states = {a["name"]: a for a in trigger.actions}
    assert states["refused"]["attempts"] == 1 and states["refused"]["status"] == "failed"
    assert states["down"]["attempts"] == 4 and states["down"]["status"] == "failed"
    assert len(server.requests) == 5


def test_idempotency_and_cooldown_hold_across_two_instances(tmp_path: Path) -> None:
    clock = Clock()
    url = database(tmp_path)
    with receiver() as server:
        one, two = service(url, clock, owner="one"), service(url, clock, owner="two")
        one.apply_policy(policy_doc(actions=[_hook(server.url)]), "alice")
        first = one.consider(evidence(), clock())
        assert first.fired
        again = two.consider(evidence(), clock())
        assert again.reason is Reason.ALREADY_FIRED
        # The next hour's window has a new key, but the cooldown (6h) holds on the other replica.
        clock.advance(hours=1)
        later = evidence(window_end=clock())
        cooling = two.consider(later, clock())
        assert cooling.reason is Reason.COOLDOWN
        assert cooling.outcomes[0].cooldown_until == clock() + timedelta(hours=5)
        assert one.tick() + two.tick() == 1  # one of them fires it, once
        clock.advance(hours=5)
        assert two.consider(evidence(window_end=clock()), clock()).fired
        two.tick()
    assert len(server.requests) == 2


def test_replicas_racing_on_new_evidence_fire_once(tmp_path: Path) -> None:
    clock = Clock()
    url = database(tmp_path)
    services = [service(url, clock, owner=f"r{i}") for i in range(4)]
    services[0].apply_policy(policy_doc(), "alice")
    # Different windows, so different keys: only the cooldown (under the policy lock) stops them.
    pieces = [evidence(window_end=clock() + timedelta(hours=i)) for i in range(4)]
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def run(i: int) -> None:
        barrier.wait()
        results.append(services[i].consider(pieces[i], clock()).fired)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, False, False, True]
    assert len(services[0].list_triggers()) == 1


def test_a_dead_worker_is_taken_over_after_its_lease(tmp_path: Path) -> None:
    clock = Clock()
    url = database(tmp_path)
    with receiver() as server:
        one, two = service(url, clock, owner="one"), service(url, clock, owner="two")
        one.apply_policy(policy_doc(actions=[_hook(server.url, timeout="30s")]), "alice")
        one.consider(evidence(), clock())
        (held,) = one.store.claim_triggers("one", clock())  # then "one" dies
        assert two.tick() == 0
        clock.advance(seconds=held.lease_s + 1)
        assert two.tick() == 1
    assert two.get_trigger(held.id).status is TriggerStatus.SUCCEEDED
    assert len(server.requests) == 1


def test_manual_fire_ignores_conditions_but_not_the_key(tmp_path: Path) -> None:
    clock = Clock()
    with receiver() as server:
        svc = service(database(tmp_path), clock)
        svc.apply_policy(policy_doc(actions=[_hook(server.url)]), "alice")
        weak = evidence(share_traffic=0.0, share_devices=0.0, windows_drifted=0)
        fired = svc.fire("sensor-drift", weak, "alice")
        assert (
            fired.fired and svc.fire("sensor-drift", weak, "alice").reason is Reason.ALREADY_FIRED
        )
        assert svc.fire("sensor-drift", weak, "alice", key="wiring-test-2").fired
        svc.tick()
        # Manual triggers start no cooldown (the next window's key is new).
        clock.advance(hours=1)
        assert svc.consider(evidence(window_end=clock()), clock()).fired
        svc.tick()
    assert [r.body["manual"] for r in server.requests] == [True, True, False]
    assert svc.store.list_audit(object_type="retraining_trigger")[-1].actor in (
        "alice",
        "retraining",
    )


def test_only_matching_policies_are_considered(tmp_path: Path) -> None:
    svc = service(database(tmp_path), Clock())
    svc.apply_policy(policy_doc("berlin", cohort="site=berlin"), "alice")
    svc.apply_policy(policy_doc("any", cohort="*", model="sensor"), "alice")
    fleet = svc.consider(evidence(), svc.clock())
    assert [o.policy for o in fleet.outcomes] == ["any"]
    berlin = svc.consider(evidence(cohort="site=berlin"), svc.clock())
    assert sorted(o.policy for o in berlin.outcomes) == ["any", "berlin"]
    none = svc.consider(evidence(model="other"), svc.clock())
    assert none.reason is Reason.NO_POLICY and not none.fired


def test_backoff_grows_and_is_capped() -> None:
    delivery = Delivery(backoff_s=2.0, max_backoff_s=30.0)
    rng = random.Random(1)
    waits = [backoff_s(delivery, n, rng) for n in range(1, 8)]
    assert 1.0 <= waits[0] <= 2.0 and 4.0 <= waits[2] <= 8.0
    assert all(15.0 <= w <= 30.0 for w in waits[4:])
