"""The RolloutStore contract for targets (SQLite and PostgreSQL).

A target is one device of one rollout. These tests state how targets are
added (once per device), counted, listed in the rollout's order, joined with
their device's newest state, and moved by compare-and-set, in particular the
``pending -> installing`` move that commits together with the device's
assignment.
"""

from __future__ import annotations

from typing import Any

import pytest

from control_plane.errors import InvalidInputError, StateError
from control_plane.rollouts.control import ACTIVE_PHASES
from control_plane.store import Store
from control_plane.store.rollout_records import DeviceProgress, TargetStatus
from fleetcore.protocol import UpdateState
from tests.contract.test_device_store import assignment, device_id, report
from tests.contract.test_rollout_store import (
    is_utc,
    one_target,
    rollout,
    target,
    with_devices,
)
from tests.contract.test_store import at

RO = rollout(1).id
S = TargetStatus


def test_adding_targets_is_idempotent_per_device_and_rollout(store: Store) -> None:
    with_devices(store, 1, 2, 3)
    store.add_rollout(rollout(1), [target(RO, 1), target(RO, 2, wave=1)])
    store.add_rollout(rollout(2), [])

    added = store.add_targets(
        [target(RO, 2, wave=3), target(RO, 3, wave=1), target(rollout(2).id, 2)]
    )

    assert added == 2
    assert store.add_targets([target(RO, 3), target(rollout(2).id, 2)]) == 0
    assert store.add_targets([]) == 0
    assert store.target_device_ids(RO) == {device_id(1), device_id(2), device_id(3)}
    assert store.target_device_ids(rollout(2).id) == {device_id(2)}
    assert one_target(store, RO, 2).wave == 1  # the first one stays
    assert store.target_device_ids("ro-missing") == set()


def test_claimed_devices_are_held_targets_of_active_rollouts_of_the_model(store: Store) -> None:
    with_devices(store, *range(1, 13))
    statuses = list(S)  # one device per status
    store.add_rollout(rollout(1), [target(RO, n, status=s) for n, s in enumerate(statuses, 1)])
    store.add_rollout(rollout(2, phase="completed"), [target(rollout(2).id, 11)])
    store.add_rollout(rollout(3, model="other"), [target(rollout(3).id, 12)])
    holding = {S.PENDING, S.INSTALLING, S.COMMITTED, S.FAILED, S.REVERTED}

    claimed = store.claimed_devices("sensor", ACTIVE_PHASES)

    assert claimed == {device_id(n): RO for n, s in enumerate(statuses, 1) if s in holding}
    assert store.claimed_devices("sensor", ACTIVE_PHASES, exclude=RO) == {}
    assert store.claimed_devices("sensor", ["completed"]) == {device_id(11): rollout(2).id}
    assert store.claimed_devices("other", ACTIVE_PHASES) == {device_id(12): rollout(3).id}
    assert store.claimed_devices("nothing", ACTIVE_PHASES) == {}


def test_the_tally_counts_targets_per_wave_and_status(store: Store) -> None:
    with_devices(store, 1, 2, 3, 4, 5)
    store.add_rollout(
        rollout(1),
        [
            target(RO, 1, wave=0, status=S.COMMITTED),
            target(RO, 2, wave=0, status=S.COMMITTED),
            target(RO, 3, wave=0, status=S.FAILED),
            target(RO, 4, wave=2, status=S.PENDING),
            target(RO, 5, wave=0, status=S.EXCLUDED),
        ],
    )

    tally = store.tally(RO)

    assert tally.counts == {0: {S.COMMITTED: 2, S.FAILED: 1, S.EXCLUDED: 1}, 2: {S.PENDING: 1}}
    assert tally.of(1) == {} and store.tally("ro-missing").counts == {}


def test_targets_are_listed_by_wave_then_order_key_and_filtered(store: Store) -> None:
    with_devices(store, 1, 2, 3, 4, 5)
    store.add_rollout(
        rollout(1),
        [
            target(RO, 1, wave=1, order_key="a"),
            target(RO, 2, wave=0, order_key="c", status=S.INSTALLING),
            target(RO, 3, wave=2, order_key="0"),
            target(RO, 4, wave=0, order_key="b"),
            target(RO, 5, wave=1, order_key="0", status=S.COMMITTED),
        ],
    )

    def ns(**query: Any) -> list[int]:
        return [
            int(t.device_id[4:].translate(str.maketrans("abcdefghij", "0123456789")))
            for t in store.list_targets(RO, **query)
        ]

    assert ns() == [4, 2, 5, 1, 3]
    assert ns(limit=2) == [4, 2]
    assert ns(statuses=[S.PENDING]) == [4, 1, 3]
    assert ns(statuses=[S.INSTALLING, S.COMMITTED]) == [2, 5]
    assert ns(statuses=[]) == []
    assert ns(max_wave=1) == [4, 2, 5, 1]
    assert ns(wave=1) == [5, 1]
    assert ns(wave=1, statuses=[S.PENDING], max_wave=1) == [1]
    assert store.list_targets("ro-missing") == []
    with pytest.raises(InvalidInputError):
        store.list_targets(RO, limit=0)


def test_in_progress_joins_installing_targets_with_their_devices_newest_state(
    store: Store,
) -> None:
    with_devices(store, 1, 2, 3, 4)
    store.add_rollout(rollout(1), [target(RO, n) for n in (1, 2, 3, 4)])
    ids = {n: one_target(store, RO, n).id for n in (1, 2, 3, 4)}
    for n in (1, 2, 4):
        sequence = store.next_assignment_sequence(device_id(n))
        store.mark_assigned(ids[n], sequence=sequence, now=at(1), previous_release=None)
    store.add_reports(
        device_id(1),
        [report(device_id(1), 1, UpdateState.FAILED, assignment_sequence=1, reason="smoke_test")],
        at(2),
    )
    store.decommission_device(device_id(4), at(3))

    found = {p.target.device_id: p for p in store.in_progress(RO)}

    assert set(found) == {device_id(1), device_id(2), device_id(4)}  # 3 is pending
    first = found[device_id(1)]
    assert isinstance(first, DeviceProgress) and first.target.id == ids[1]
    assert (first.desired_sequence, first.state_sequence, first.state, first.reason) == (
        1,
        1,
        "failed",
        "smoke_test",
    )
    assert not first.decommissioned
    silent = found[device_id(2)]
    assert (silent.state_sequence, silent.state, silent.reason) == (None, None, None)
    assert found[device_id(4)].decommissioned
    assert store.in_progress("ro-missing") == []


def test_assigned_since_counts_targets_assigned_at_or_after_a_time(store: Store) -> None:
    with_devices(store, 1, 2, 3)
    store.add_rollout(rollout(1), [target(RO, n) for n in (1, 2, 3)])
    for n in (1, 2, 3):
        store.mark_assigned(
            one_target(store, RO, n).id, sequence=1, now=at(n), previous_release=None
        )

    assert store.assigned_since(RO, at(2)) == 2
    assert store.assigned_since(RO, at(3.5)) == 0
    assert store.assigned_since(RO, at(0)) == 3
    assert store.assigned_since("ro-missing", at(0)) == 0


# -- compare-and-set moves ---------------------------------------------------------------------


def test_mark_assigned_moves_a_pending_target_to_installing_once(store: Store) -> None:
    with_devices(store, 1)
    store.add_rollout(rollout(1), [target(RO, 1, reason="left over")])
    target_id = one_target(store, RO, 1).id

    store.mark_assigned(target_id, sequence=4, now=at(1), previous_release=1)

    marked = one_target(store, RO, 1)
    assert (marked.status, marked.sequence, marked.attempts, marked.previous_release) == (
        S.INSTALLING,
        4,
        1,
        1,
    )
    assert marked.assigned_at == at(1) and is_utc(marked.assigned_at) and marked.reason is None
    with pytest.raises(StateError, match="no longer pending"):
        store.mark_assigned(target_id, sequence=5, now=at(2), previous_release=1)
    assert one_target(store, RO, 1) == marked  # nothing written

    store.mark_assigned(target_id, sequence=5, now=at(3), previous_release=1, retry=True)
    retried = one_target(store, RO, 1)
    assert (retried.status, retried.sequence, retried.attempts, retried.assigned_at) == (
        S.INSTALLING,
        5,
        2,
        at(3),
    )
    store.update_target(target_id, status=S.COMMITTED, expect=[S.INSTALLING], now=at(4))
    with pytest.raises(StateError):
        store.mark_assigned(target_id, sequence=6, now=at(5), previous_release=1, retry=True)
    with pytest.raises(StateError):
        store.mark_assigned(999_999, sequence=1, now=at(5), previous_release=None)


def test_a_refused_mark_undoes_the_assignment_made_in_its_savepoint(store: Store) -> None:
    with_devices(store, 1, 2)
    store.add_rollout(rollout(1), [target(RO, 1), target(RO, 2, status=S.INSTALLING)])
    ids = {n: one_target(store, RO, n).id for n in (1, 2)}

    with store.transaction() as tx:
        for n in (2, 1):
            try:
                with tx.transaction() as inner:
                    sequence = inner.next_assignment_sequence(device_id(n))
                    inner.add_assignment(assignment(device_id(n), sequence))
                    inner.mark_assigned(ids[n], sequence=sequence, now=at(1), previous_release=None)
            except StateError:
                assert n == 2

    assert store.latest_assignment(device_id(2)) is None
    gone = store.get_device(device_id(2))
    assert gone is not None and gone.desired_sequence == 0
    latest = store.latest_assignment(device_id(1))
    assert latest is not None and latest.sequence == one_target(store, RO, 1).sequence == 1


def test_update_target_sets_the_status_only_from_an_expected_one(store: Store) -> None:
    with_devices(store, 1)
    store.add_rollout(rollout(1), [target(RO, 1, status=S.INSTALLING, reason="old")])
    target_id = one_target(store, RO, 1).id

    refused = store.update_target(target_id, status=S.COMMITTED, expect=[S.PENDING], now=at(1))
    assert refused is False and one_target(store, RO, 1).status is S.INSTALLING

    assert store.update_target(
        target_id, status=S.FAILED, expect=[S.PENDING, S.INSTALLING], now=at(2), reason="x" * 3000
    )
    failed = one_target(store, RO, 1)
    assert failed.status is S.FAILED and failed.finished_at == at(2)
    assert failed.reason == "x" * 2000 and failed.revert_sequence is None

    assert store.update_target(
        target_id, status=S.ROLLED_BACK, expect=[S.FAILED], now=at(3), revert_sequence=7
    )
    rolled = one_target(store, RO, 1)
    assert (rolled.status, rolled.revert_sequence, rolled.reason) == (S.ROLLED_BACK, 7, "x" * 2000)
    assert store.update_target(999_999, status=S.FAILED, expect=list(S), now=at(4)) is False


# -- devices and their assignments ---------------------------------------------------------------


def test_get_devices_returns_the_stored_ones_decommissioned_too(store: Store) -> None:
    with_devices(store, 1, 2)
    store.decommission_device(device_id(2), at(1))

    found = store.get_devices([device_id(1), device_id(2), device_id(9), device_id(1)])

    assert sorted(found) == [device_id(1), device_id(2)]
    assert found[device_id(1)].active and not found[device_id(2)].active
    assert store.get_devices([]) == {}


def test_latest_assignments_of_a_release_are_active_devices_desiring_it(store: Store) -> None:
    with_devices(store, 1, 2, 3, 4, 5)

    def assign(n: int, release: int, model: str = "sensor") -> None:
        with store.transaction() as tx:
            sequence = tx.next_assignment_sequence(device_id(n))
            tx.add_assignment(assignment(device_id(n), sequence, release=release, model=model))

    for n in (4, 1, 2, 3):
        assign(n, 2)
    assign(2, 3)  # moved on: its desired state is release 3 now
    assign(5, 2, model="other")
    store.decommission_device(device_id(3), at(1))

    found = store.latest_assignments_of("sensor", 2)

    assert [(a.device_id, a.sequence, a.release) for a in found] == [
        (device_id(1), 1, 2),
        (device_id(4), 1, 2),
    ]
    assert [a.device_id for a in store.latest_assignments_of("sensor", 3)] == [device_id(2)]
    assert store.latest_assignments_of("sensor", 9) == []
