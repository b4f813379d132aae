"""The Store contract for devices, assignments and status reports (SQLite and PostgreSQL).

Each test states one promise of the device methods of
:class:`control_plane.store.Store`: identities stay unique, assignment
sequences are allocated atomically, and reports are ingested once per
``(device, seq)`` without moving a device's state backwards.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from control_plane.errors import ConflictError, InvalidInputError, NotFoundError, StateError
from control_plane.store import (
    DeviceAssignmentRecord,
    DeviceRecord,
    DeviceReportRecord,
    ReportsResult,
    Store,
)
from fleetcore.protocol import Installed, StatusReport, UpdateState
from tests.contract.test_store import T0, at, count_rows, in_threads, sha


def device_id(n: int) -> str:
    return "dev-" + f"{n:020d}".translate(str.maketrans("0123456789", "abcdefghij"))


def device(n: int = 1, **fields: Any) -> DeviceRecord:
    values: dict[str, Any] = {
        "id": device_id(n),
        "hostname": f"pi-{n}",
        "public_key": sha(f"pub-{n}"),
        "keyid": sha(f"keyid-{n}"),
        "labels": {"site": "a", "n": str(n)},
        "capabilities": {"arch": "aarch64", "formats": ["onnx"]},
        "token_hash": sha(f"token-{n}"),
        "mqtt_password_hash": f"$7$101$salt{n}$hash",
        "created_at": T0,
    }
    values.update(fields)
    return DeviceRecord(**values)


def assignment(dev: str, sequence: int, **fields: Any) -> DeviceAssignmentRecord:
    values: dict[str, Any] = {
        "device_id": dev,
        "sequence": sequence,
        "model": "sensor",
        "release": 1,
        "manifest_sha256": sha("manifest"),
        "artifact_sha256": sha("artifact"),
        "envelope": b'{"signed":{"sequence":%d}}' % sequence,
        "issued_at": T0,
        "expires_at": at(60 * 24),
        "created_by": "alice",
    }
    values.update(fields)
    return DeviceAssignmentRecord(**values)


RELEASE_1 = Installed("sensor", 1, sha("r1"))
RELEASE_2 = Installed("sensor", 2, sha("r2"))


def report(
    dev: str, seq: int, state: UpdateState = UpdateState.IDLE, **fields: Any
) -> DeviceReportRecord:
    status = StatusReport(device=dev, seq=seq, time=at(seq), state=state, **fields)
    return DeviceReportRecord(
        device_id=dev,
        seq=seq,
        state=state,
        time=status.time,
        received_at=at(100 + seq),
        transport="http",
        report=status.to_dict(),
    )


def stored(store: Store, dev: str) -> DeviceRecord:
    found = store.get_device(dev)
    assert found is not None
    return found


# -- devices --------------------------------------------------------------------------------


def test_device_round_trips_with_defaults_and_is_found_by_token(store: Store) -> None:
    added = store.add_device(device(1))

    assert added == device(1)
    assert added.state is None and added.desired_sequence == 0 and added.last_seq == 0
    assert added.online is False and added.active
    assert store.get_device(device_id(1)) == added
    assert store.find_device_by_token(sha("token-1")) == added
    assert store.get_device(device_id(2)) is None
    assert store.find_device_by_token(sha("nope")) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"keyid": sha("keyid-1")}, "public key"),
        ({"token_hash": sha("token-1")}, "token"),
        ({"id": device_id(1)}, "already exists"),
    ],
)
def test_duplicate_identity_is_a_conflict_naming_it(
    store: Store, change: dict[str, str], message: str
) -> None:
    store.add_device(device(1))
    with pytest.raises(ConflictError, match=message):
        store.add_device(device(2, **change))
    assert [d.id for d in store.list_devices()] == [device_id(1)]


def test_list_devices_filters_by_labels_state_and_pages_by_id(store: Store) -> None:
    for n in (3, 1, 2, 4):
        labels = {"site": "a" if n < 3 else "b", "hw": "rpi4" if n % 2 else "x86"}
        store.add_device(device(n, labels=labels))
    store.add_reports(device_id(2), [report(device_id(2), 1, UpdateState.COMMITTED)], at(1))
    store.decommission_device(device_id(4), at(2))

    def ids(**query: Any) -> list[str]:
        return [d.id for d in store.list_devices(**query)]

    assert ids() == [device_id(1), device_id(2), device_id(3)]
    assert ids(include_decommissioned=True) == [device_id(n) for n in (1, 2, 3, 4)]
    assert ids(labels={"site": "a"}) == [device_id(1), device_id(2)]
    assert ids(labels={"site": "a", "hw": "rpi4"}) == [device_id(1)]
    assert ids(labels={"site": "zzz"}) == []
    assert ids(state=UpdateState.COMMITTED) == [device_id(2)]
    assert ids(after=device_id(1), limit=1) == [device_id(2)]
    with pytest.raises(InvalidInputError):
        store.list_devices(limit=0)


def test_labels_are_replaced_and_a_gone_device_refuses_changes(store: Store) -> None:
    store.add_device(device(1))

    updated = store.update_device_labels(device_id(1), {"z": "1", "a": "2"})

    assert updated.labels == {"a": "2", "z": "1"}
    assert stored(store, device_id(1)).labels == {"a": "2", "z": "1"}
    with pytest.raises(NotFoundError):
        store.update_device_labels(device_id(9), {})
    store.decommission_device(device_id(1), at(1))
    with pytest.raises(StateError):
        store.update_device_labels(device_id(1), {})


def test_decommissioning_voids_the_mqtt_account_once(store: Store) -> None:
    store.add_device(device(1))
    store.add_device(device(2))
    store.set_presence(device_id(1), True, at(1))
    assert store.mqtt_accounts() == [
        (device_id(1), "$7$101$salt1$hash"),
        (device_id(2), "$7$101$salt2$hash"),
    ]

    gone = store.decommission_device(device_id(1), at(5))

    assert gone.decommissioned_at == at(5) and not gone.active and gone.online is False
    assert store.mqtt_accounts() == [(device_id(2), "$7$101$salt2$hash")]
    with pytest.raises(StateError, match="decommissioned"):
        store.decommission_device(device_id(1), at(6))
    with pytest.raises(NotFoundError):
        store.decommission_device(device_id(9), at(6))


def test_a_sighting_only_moves_last_seen_forward(store: Store) -> None:
    store.add_device(device(1))
    store.touch_device(device_id(1), at(5))
    store.touch_device(device_id(1), at(4))  # an older clock reading
    seen = stored(store, device_id(1))
    assert seen.last_seen == at(5) and seen.online is False
    store.touch_device(device_id(9), at(6))  # unknown: ignored
    store.decommission_device(device_id(1), at(7))
    store.touch_device(device_id(1), at(8))
    assert stored(store, device_id(1)).last_seen == at(5)


def test_presence_and_malformed_counts(store: Store) -> None:
    store.add_device(device(1))

    assert store.set_presence(device_id(1), True, at(3)).online is True
    offline = store.set_presence(device_id(1), False, at(2))  # an older clock reading

    assert offline.online is False and offline.last_seen == at(3)
    retained = store.set_presence(device_id(1), True, None)  # a stored message, not a sighting
    assert retained.online is True and retained.last_seen == at(3)
    assert store.count_malformed_reports(device_id(1), 2).malformed_reports == 2
    assert store.count_malformed_reports(device_id(1), 3).malformed_reports == 5
    with pytest.raises(NotFoundError):
        store.count_malformed_reports(device_id(9), 1)
    with pytest.raises(NotFoundError):
        store.set_presence(device_id(9), True, at(1))


# -- assignments ----------------------------------------------------------------------------


def test_assignment_sequences_count_up_per_device_and_compare_and_set(store: Store) -> None:
    store.add_device(device(1))
    store.add_device(device(2))

    assert [store.next_assignment_sequence(device_id(1)) for _ in range(3)] == [1, 2, 3]
    assert store.next_assignment_sequence(device_id(2)) == 1
    assert store.next_assignment_sequence(device_id(1), expect_current=3) == 4
    with pytest.raises(StateError, match="at assignment sequence 4"):
        store.next_assignment_sequence(device_id(1), expect_current=3)
    assert stored(store, device_id(1)).desired_sequence == 4
    with pytest.raises(NotFoundError):
        store.next_assignment_sequence(device_id(9))
    store.decommission_device(device_id(2), at(1))
    with pytest.raises(StateError, match="decommissioned"):
        store.next_assignment_sequence(device_id(2))


def test_concurrent_allocations_never_share_a_sequence(store: Store) -> None:
    store.add_device(device(1))

    results = in_threads(12, lambda _: store.next_assignment_sequence(device_id(1)))

    assert sorted(r for r in results if isinstance(r, int)) == list(range(1, 13)), results
    assert stored(store, device_id(1)).desired_sequence == 12


def test_concurrent_compare_and_set_allocations_let_exactly_one_through(store: Store) -> None:
    store.add_device(device(1))

    results = in_threads(
        8, lambda _: store.next_assignment_sequence(device_id(1), expect_current=0)
    )

    assert [r for r in results if isinstance(r, int)] == [1]
    assert sum(isinstance(r, StateError) for r in results) == 7, results


def test_latest_assignment_is_the_one_at_the_desired_sequence(store: Store) -> None:
    store.add_device(device(1))
    assert store.latest_assignment(device_id(1)) is None
    with store.transaction() as tx:
        first = tx.add_assignment(
            assignment(device_id(1), tx.next_assignment_sequence(device_id(1)))
        )
    with store.transaction() as tx:
        second = tx.add_assignment(
            assignment(device_id(1), tx.next_assignment_sequence(device_id(1)), release=2)
        )

    assert first.id > 0 and second.sequence == 2
    assert store.latest_assignment(device_id(1)) == second
    assert store.desired_sequences([device_id(1), device_id(9)]) == {device_id(1): 2}
    with pytest.raises(ConflictError, match="assignment 2 of device"):
        store.add_assignment(assignment(device_id(1), 2))
    with pytest.raises(NotFoundError):
        store.add_assignment(assignment(device_id(9), 1))


def test_a_rolled_back_assignment_gives_its_sequence_back(store: Store) -> None:
    store.add_device(device(1))

    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.add_assignment(assignment(device_id(1), tx.next_assignment_sequence(device_id(1))))
        raise RuntimeError("signing failed")

    assert stored(store, device_id(1)).desired_sequence == 0
    assert store.latest_assignment(device_id(1)) is None


def test_expiring_and_unpublished_assignments_are_latest_ones_of_active_devices(
    store: Store,
) -> None:
    for n in (1, 2, 3):
        store.add_device(device(n))
    for n, days in ((1, 1), (2, 10), (3, 2)):
        dev = device_id(n)
        with store.transaction() as tx:
            tx.add_assignment(
                assignment(dev, tx.next_assignment_sequence(dev), expires_at=at(days * 1440))
            )
    with store.transaction() as tx:  # device 1 gets a newer, long-lived one
        tx.add_assignment(
            assignment(device_id(1), tx.next_assignment_sequence(device_id(1)), expires_at=at(9e4))
        )
    store.decommission_device(device_id(3), at(1))

    expiring = store.assignments_expiring(T0 + timedelta(days=5))
    assert expiring == []
    expiring = store.assignments_expiring(T0 + timedelta(days=70))
    assert [(a.device_id, a.sequence) for a in expiring] == [(device_id(2), 1), (device_id(1), 2)]

    unpublished = store.unpublished_assignments()
    assert [(a.device_id, a.sequence) for a in unpublished] == [
        (device_id(2), 1),
        (device_id(1), 2),
    ]
    store.mark_assignment_published(device_id(1), 2, at(5))
    store.mark_assignment_published(device_id(1), 2, at(9))  # the first acknowledgement stays
    store.mark_assignment_published(device_id(9), 1, at(9))  # gone: nothing to do
    assert [a.device_id for a in store.unpublished_assignments()] == [device_id(2)]
    latest = store.latest_assignment(device_id(1))
    assert latest is not None and latest.published_at == at(5)


# -- status reports ---------------------------------------------------------------------------


def test_reports_are_stored_once_and_the_newest_sets_the_state(store: Store) -> None:
    dev = device_id(1)
    store.add_device(device(1))

    first = store.add_reports(
        dev,
        [
            report(dev, 1, UpdateState.NOTIFIED, target=RELEASE_2, assignment_sequence=3),
            report(
                dev,
                2,
                UpdateState.COMMITTED,
                target=RELEASE_2,
                active=RELEASE_2,
                previous=RELEASE_1,
                assignment_sequence=3,
                agent_version="0.1.0",
            ),
        ],
        at(10),
    )
    again = store.add_reports(dev, [report(dev, 2, UpdateState.FAILED), report(dev, 2)], at(11))

    assert first == ReportsResult(accepted=2, duplicates=0, last_seq=2)
    assert again == ReportsResult(accepted=0, duplicates=2, last_seq=2)
    found = stored(store, dev)
    assert found.state is UpdateState.COMMITTED and found.state_at == at(2)
    assert found.state_sequence == 3 and found.agent_version == "0.1.0"
    assert found.installed("current") == RELEASE_2
    assert found.installed("previous") == RELEASE_1
    assert found.installed("target") == RELEASE_2
    assert found.last_seen == at(11) and found.last_seq == 2
    assert [r.seq for r in store.list_reports(dev)] == [2, 1]
    assert store.list_reports(dev)[0].state is UpdateState.COMMITTED  # the first one kept


def test_an_older_report_is_stored_but_does_not_move_the_state_back(store: Store) -> None:
    dev = device_id(1)
    store.add_device(device(1))
    store.add_reports(dev, [report(dev, 5, UpdateState.COMMITTED, active=RELEASE_2)], at(1))

    late = store.add_reports(
        dev,
        [report(dev, 3, UpdateState.FAILED, reason="smoke_test", message="outputs differ")],
        at(2),
    )

    assert late == ReportsResult(accepted=1, duplicates=0, last_seq=5)
    found = stored(store, dev)
    assert found.state is UpdateState.COMMITTED and found.last_reason is None
    assert found.installed("current") == RELEASE_2 and found.last_seen == at(2)
    assert [r.seq for r in store.list_reports(dev, limit=5)] == [5, 3]
    assert [r.seq for r in store.list_reports(dev, limit=1)] == [5]


def test_a_failure_report_records_reason_and_clears_releases_it_does_not_name(
    store: Store,
) -> None:
    dev = device_id(1)
    store.add_device(device(1))
    store.add_reports(dev, [report(dev, 1, UpdateState.COMMITTED, active=RELEASE_1)], at(1))

    store.add_reports(
        dev,
        [
            report(
                dev,
                2,
                UpdateState.REVERTED,
                active=RELEASE_1,
                target=RELEASE_2,
                reason="probation",
                message="p95 latency 80 ms",
            )
        ],
        at(2),
    )

    found = stored(store, dev)
    assert found.state is UpdateState.REVERTED
    assert (found.last_reason, found.last_message) == ("probation", "p95 latency 80 ms")
    assert found.installed("target") == RELEASE_2 and found.installed("previous") is None


def test_reports_for_missing_gone_or_other_devices_are_refused(store: Store) -> None:
    store.add_device(device(1))
    store.add_device(device(2))
    with pytest.raises(NotFoundError):
        store.add_reports(device_id(9), [report(device_id(9), 1)], at(1))
    with pytest.raises(InvalidInputError, match="not"):
        store.add_reports(device_id(1), [report(device_id(2), 1)], at(1))
    store.decommission_device(device_id(2), at(1))
    with pytest.raises(StateError):
        store.add_reports(device_id(2), [report(device_id(2), 1)], at(1))
    assert store.list_reports(device_id(1)) == [] and store.list_reports(device_id(2)) == []


def test_concurrent_overlapping_batches_store_each_report_once(
    store: Store, engine: Engine
) -> None:
    dev = device_id(1)
    store.add_device(device(1))

    def batch(index: int) -> ReportsResult:
        seqs = range(index + 1, index + 11)  # every batch overlaps its neighbours
        return store.add_reports(dev, [report(dev, s, UpdateState.STAGED) for s in seqs], at(index))

    results = in_threads(8, batch)

    assert all(isinstance(r, ReportsResult) for r in results), results
    accepted = sum(r.accepted for r in results if isinstance(r, ReportsResult))
    assert accepted == count_rows(engine, "device_report") == 17
    assert stored(store, dev).last_seq == 17


def test_empty_batches_only_mark_the_device_seen(store: Store) -> None:
    store.add_device(device(1))

    assert store.add_reports(device_id(1), [], at(4)) == ReportsResult(0, 0, 0)
    assert stored(store, device_id(1)).last_seen == at(4)


def test_reports_and_presence_commit_together_in_a_transaction(store: Store) -> None:
    dev = device_id(1)
    store.add_device(device(1))

    with store.transaction() as tx:
        tx.add_reports(dev, [report(dev, 1)], at(1))
        with pytest.raises(NotFoundError):
            tx.set_presence(device_id(9), True, at(1))  # refused; the transaction goes on
        tx.set_presence(dev, True, at(1))

    found = stored(store, dev)
    assert found.last_seq == 1 and found.online is True and found.last_seen == at(1)
