"""The RolloutStore contract (SQLite and PostgreSQL): rollouts, leases and targets.

Each test states one promise of :class:`control_plane.store.rollout_port.RolloutStore`:
state is written only by compare-and-set on the revision (and the lease owner),
a lease is held by one owner at a time, and a target moves from ``pending`` to
``installing`` once, in the same transaction as the device's assignment.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from control_plane.errors import ConflictError, InvalidInputError, StateError
from control_plane.store import Store
from control_plane.store.rollout_records import (
    RolloutDeviceRecord,
    RolloutRecord,
    TargetStatus,
)
from tests.contract.test_device_store import device, device_id
from tests.contract.test_store import T0, at, in_threads

PROGRESSING = ["progressing"]


def rollout(n: int = 1, **fields: Any) -> RolloutRecord:
    values: dict[str, Any] = {
        "id": f"ro-{n:010d}",
        "name": f"sensor-{n}",
        "model": "sensor",
        "release": 2,
        "spec": {"spec": {"model": "sensor", "waves": [{"percent": 100.0}]}},
        "spec_digest": f"digest-{n}",
        "phase": "progressing",
        "state": {"phase": "progressing", "wave": 0},
        "created_at": T0,
        "created_by": "alice",
        "updated_at": T0,
    }
    values.update(fields)
    return RolloutRecord(**values)


def target(rollout_id: str, n: int, **fields: Any) -> RolloutDeviceRecord:
    values: dict[str, Any] = {
        "rollout_id": rollout_id,
        "device_id": device_id(n),
        "wave": 0,
        "order_key": f"key-{n:04d}",
        "status": TargetStatus.PENDING,
    }
    values.update(fields)
    return RolloutDeviceRecord(**values)


def with_devices(store: Store, *numbers: int) -> None:
    for n in numbers:
        store.add_device(device(n))


def targets_by_device(store: Store, rollout_id: str) -> dict[str, RolloutDeviceRecord]:
    return {t.device_id: t for t in store.list_targets(rollout_id)}


def one_target(store: Store, rollout_id: str, n: int) -> RolloutDeviceRecord:
    return targets_by_device(store, rollout_id)[device_id(n)]


def is_utc(value: datetime | None) -> bool:
    return value is not None and value.utcoffset() == timedelta(0)


# -- rollouts ----------------------------------------------------------------------------------


def test_a_rollout_and_its_targets_round_trip(store: Store) -> None:
    with_devices(store, 1, 2)
    record = rollout(1, created_at=at(0.5))
    wanted = [target(record.id, 1, stratum="a", previous_release=1), target(record.id, 2, wave=1)]

    added = store.add_rollout(record, wanted)

    assert added == record and added.revision == 0 and added.lease_owner is None
    assert store.get_rollout(record.id) == added
    assert store.find_rollout("sensor-1") == added
    assert is_utc(added.created_at) and added.created_at == at(0.5)
    assert store.get_rollout("ro-missing") is None and store.find_rollout("nope") is None
    found = store.list_targets(record.id)
    assert all(t.id > 0 for t in found)
    assert [(t.device_id, t.wave, t.stratum, t.previous_release, t.status) for t in found] == [
        (device_id(1), 0, "a", 1, TargetStatus.PENDING),
        (device_id(2), 1, None, None, TargetStatus.PENDING),
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "other-name"}, "a rollout with id ro-0000000001 already exists"),
        ({"id": "ro-other"}, "a rollout named 'sensor-1' already exists"),
    ],
)
def test_a_duplicate_id_or_name_is_a_conflict_naming_it(
    store: Store, change: dict[str, str], message: str
) -> None:
    with_devices(store, 1, 2)
    store.add_rollout(rollout(1), [target(rollout(1).id, 1)])
    duplicate = rollout(1, **change)

    with pytest.raises(ConflictError, match=message):
        store.add_rollout(duplicate, [target(duplicate.id, 2)])

    assert [r.id for r in store.list_rollouts()] == [rollout(1).id]
    assert store.target_device_ids(rollout(1).id) == {device_id(1)}
    assert store.target_device_ids("ro-other") == set()


def test_rollouts_are_listed_newest_first_by_phase_and_model(store: Store) -> None:
    store.add_rollout(rollout(1, created_at=at(1)), [])
    store.add_rollout(rollout(2, created_at=at(3), phase="completed"), [])
    store.add_rollout(rollout(3, created_at=at(2), model="other"), [])
    store.add_rollout(rollout(4, created_at=at(3)), [])  # same time as 2: by id, descending

    def ids(**query: Any) -> list[int]:
        return [int(r.id[3:]) for r in store.list_rollouts(**query)]

    assert ids() == [4, 2, 3, 1]
    assert ids(phases=["progressing"]) == [4, 3, 1]
    assert ids(phases=["completed", "paused"]) == [2]
    assert ids(phases=[]) == []
    assert ids(model="sensor") == [4, 2, 1]
    assert ids(model="other", phases=["completed"]) == []
    assert ids(limit=2) == [4, 2]
    with pytest.raises(InvalidInputError):
        store.list_rollouts(limit=0)


def test_saving_compares_and_sets_the_revision(store: Store) -> None:
    store.add_rollout(rollout(1), [])
    state = {"phase": "soaking", "wave": 1, "gates": [{"gate": "install", "values": {"n": 3}}]}

    saved = store.save_rollout(
        "ro-0000000001", phase="soaking", state=state, expect_revision=0, now=at(1)
    )

    assert (saved.revision, saved.phase, saved.state, saved.updated_at) == (
        1,
        "soaking",
        state,
        at(1),
    )
    assert is_utc(saved.updated_at) and store.get_rollout("ro-0000000001") == saved
    with pytest.raises(StateError, match="revision 0"):
        store.save_rollout("ro-0000000001", phase="paused", state={}, expect_revision=0, now=at(2))
    assert store.get_rollout("ro-0000000001") == saved  # nothing written
    again = store.save_rollout(
        "ro-0000000001", phase="paused", state={"phase": "paused"}, expect_revision=1, now=at(3)
    )
    assert again.revision == 2 and again.phase == "paused"
    with pytest.raises(StateError):
        store.save_rollout("ro-missing", phase="paused", state={}, expect_revision=0, now=at(3))


def test_saving_with_an_owner_needs_that_owners_lease(store: Store) -> None:
    store.add_rollout(rollout(1), [])
    store.claim_rollouts("a", PROGRESSING, at(0), at(1))

    with pytest.raises(StateError, match="lease of b"):
        store.save_rollout(
            "ro-0000000001", phase="paused", state={}, expect_revision=0, now=at(0.5), owner="b"
        )
    unchanged = store.get_rollout("ro-0000000001")
    assert unchanged is not None and unchanged.revision == 0 and unchanged.phase == "progressing"

    saved = store.save_rollout(
        "ro-0000000001", phase="paused", state={}, expect_revision=0, now=at(0.5), owner="a"
    )
    assert saved.revision == 1 and saved.lease_owner == "a"
    store.release_rollout("ro-0000000001", "a")
    with pytest.raises(StateError):
        store.save_rollout(
            "ro-0000000001", phase="paused", state={}, expect_revision=1, now=at(0.6), owner="a"
        )


# -- leases ------------------------------------------------------------------------------------


def test_a_claim_takes_free_expired_and_own_leases_of_the_listed_phases(store: Store) -> None:
    store.add_rollout(rollout(1), [])  # free
    store.add_rollout(rollout(2, lease_owner="b", lease_until=at(10)), [])  # b's, live
    store.add_rollout(rollout(3, lease_owner="b", lease_until=at(4)), [])  # b's, expired
    store.add_rollout(rollout(4, lease_owner="a", lease_until=at(6)), [])  # ours: renewed
    store.add_rollout(rollout(5, phase="completed"), [])  # free, another phase
    store.add_rollout(rollout(6, phase="paused", created_at=at(-1)), [])  # free, the oldest

    claimed = store.claim_rollouts("a", ["progressing", "paused"], at(5), at(7))

    assert sorted(int(r.id[3:]) for r in claimed) == [1, 3, 4, 6]
    assert all(r.lease_owner == "a" and r.lease_until == at(7) for r in claimed)
    assert all(is_utc(r.lease_until) for r in claimed)
    other = store.get_rollout(rollout(2).id)
    assert other is not None and (other.lease_owner, other.lease_until) == ("b", at(10))
    free = store.get_rollout(rollout(5).id)
    assert free is not None and free.lease_owner is None
    assert store.claim_rollouts("c", ["progressing", "paused"], at(6), at(8)) == []
    oldest = store.claim_rollouts("c", ["progressing", "paused"], at(7.5), at(9), limit=1)
    assert [r.id for r in oldest] == [rollout(6).id]


def test_concurrent_claims_never_give_a_rollout_to_two_owners(store: Store) -> None:
    for n in range(1, 6):
        store.add_rollout(rollout(n, created_at=at(n)), [])

    results = in_threads(
        8, lambda i: store.claim_rollouts(f"owner-{i}", PROGRESSING, at(10), at(11))
    )

    assert not [r for r in results if isinstance(r, Exception)], results
    held = [(r.id, r.lease_owner) for found in results if isinstance(found, list) for r in found]
    assert sorted(i for i, _ in held) == [rollout(n).id for n in range(1, 6)]  # each once
    for rollout_id, owner in held:
        stored = store.get_rollout(rollout_id)
        assert stored is not None and stored.lease_owner == owner


def test_releasing_gives_the_lease_up_only_for_its_owner(store: Store) -> None:
    store.add_rollout(rollout(1), [])
    store.claim_rollouts("a", PROGRESSING, at(0), at(5))

    store.release_rollout("ro-0000000001", "b")  # not b's: nothing happens
    assert store.claim_rollouts("b", PROGRESSING, at(1), at(6)) == []
    store.release_rollout("ro-0000000001", "a")
    store.release_rollout("ro-missing", "a")  # no error

    freed = store.get_rollout("ro-0000000001")
    assert freed is not None and (freed.lease_owner, freed.lease_until) == (None, None)
    assert [r.lease_owner for r in store.claim_rollouts("b", PROGRESSING, at(1), at(6))] == ["b"]
