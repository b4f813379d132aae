"""Compare-and-set updates: a write that expects a state changes nothing if it moved.

The release service relies on these so that a revoke and a signature attach,
or two attaches, racing each other can never leave a revoked release released
or lose a signature.
"""

from __future__ import annotations

import threading

import pytest

from control_plane.errors import StateError
from control_plane.store import ReleaseState, Store, VersionState
from tests.contract.test_store import add_version, at, release_record


def test_release_update_expecting_a_state(store: Store) -> None:
    version = add_version(store)
    release = store.create_release(release_record(version, 1))
    store.update_release(release.id, state=ReleaseState.REVOKED, expect_state=ReleaseState.PENDING)
    with pytest.raises(StateError):
        store.update_release(
            release.id,
            state=ReleaseState.RELEASED,
            manifest=b"new",
            expect_state=ReleaseState.PENDING,
        )
    after = store.get_release("sensor", 1)
    assert after is not None
    assert after.state is ReleaseState.REVOKED and after.manifest == release.manifest


def test_release_update_expecting_manifest_bytes(store: Store) -> None:
    version = add_version(store)
    release = store.create_release(release_record(version, 1))
    store.update_release(release.id, manifest=b"one signature", expect_manifest=release.manifest)
    with pytest.raises(StateError):
        store.update_release(release.id, manifest=b"lost update", expect_manifest=release.manifest)
    after = store.get_release("sensor", 1)
    assert after is not None and after.manifest == b"one signature"


def test_version_update_expecting_a_state(store: Store) -> None:
    version = add_version(store, state=VersionState.VALIDATED)
    store.update_version(version.id, state=VersionState.DRAFT, reasons=["x"], updated_at=at(1))
    with pytest.raises(StateError):
        store.update_version(
            version.id,
            state=VersionState.RELEASED,
            updated_at=at(2),
            expect_state=VersionState.VALIDATED,
        )
    after = store.get_version_by_id(version.id)
    assert after is not None and after.state is VersionState.DRAFT and after.updated_at == at(1)


def test_a_failed_compare_and_set_rolls_back_its_transaction(store: Store) -> None:
    version = add_version(store, state=VersionState.VALIDATED)
    release = store.create_release(release_record(version, 1))
    store.update_release(release.id, state=ReleaseState.REVOKED)
    with pytest.raises(StateError), store.transaction() as tx:
        tx.update_version(version.id, state=VersionState.RELEASED, updated_at=at(1))
        tx.update_release(
            release.id, state=ReleaseState.RELEASED, expect_state=ReleaseState.PENDING
        )
    after = store.get_version_by_id(version.id)
    assert after is not None and after.state is VersionState.VALIDATED


def test_only_one_of_many_racing_writers_wins(store: Store) -> None:
    version = add_version(store)
    release = store.create_release(release_record(version, 1))
    outcomes: list[str] = []
    lock = threading.Lock()

    def attach(index: int) -> None:
        try:
            store.update_release(
                release.id, manifest=b"sig %d" % index, expect_manifest=release.manifest
            )
            result = "won"
        except StateError:
            result = "lost"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attach, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("won") == 1 and outcomes.count("lost") == 7
