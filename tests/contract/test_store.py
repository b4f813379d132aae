"""The Store contract, run against every adapter and database (see ``conftest.py``).

Each test states one promise of :class:`control_plane.store.Store`; the
``store`` fixture is a migrated SQLite file or PostgreSQL database, so every
promise is checked on both.
"""

from __future__ import annotations

import hashlib
import inspect
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, text

from control_plane.errors import ConflictError, InvalidInputError, NotFoundError, StateError
from control_plane.store import (
    ApiTokenRecord,
    ArtifactRecord,
    AuditRecord,
    EnrollTokenRecord,
    ModelVersionRecord,
    ReleaseRecord,
    ReleaseState,
    RevocationRecord,
    Role,
    Store,
    VersionState,
)
from control_plane.store.sql import SqlStore

T = TypeVar("T")

T0 = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=timezone.utc)
IST = timezone(timedelta(hours=5, minutes=30))
NST = timezone(timedelta(hours=-3, minutes=-30))


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def artifact(name: str = "model", *, created_at: datetime = T0) -> ArtifactRecord:
    return ArtifactRecord(
        sha256=sha(name), length=len(name) * 1000, kind="onnx", created_at=created_at
    )


def version_record(
    model: str = "sensor", version: str = "1.0.0", *, created_at: datetime = T0, **fields: Any
) -> ModelVersionRecord:
    values: dict[str, Any] = {
        "model": model,
        "version": version,
        "state": VersionState.DRAFT,
        "artifact_sha256": sha(f"{model}-{version}"),
        "format": "onnx",
        "created_at": created_at,
        "updated_at": created_at,
        "created_by": "alice",
    }
    values.update(fields)
    return ModelVersionRecord(**values)


def add_version(
    store: Store, model: str = "sensor", version: str = "1.0.0", **fields: Any
) -> ModelVersionRecord:
    """Store the version's artifact, then the version."""
    store.add_artifact(artifact(f"{model}-{version}"))
    return store.create_version(version_record(model, version, **fields))


def release_record(version: ModelVersionRecord, counter: int, **fields: Any) -> ReleaseRecord:
    values: dict[str, Any] = {
        "model": version.model,
        "counter": counter,
        "version_id": version.id,
        "state": ReleaseState.PENDING,
        "manifest": b'{"signed":{"counter":%d}}\x00\xff' % counter,
        "manifest_sha256": sha(f"manifest-{version.model}-{counter}"),
        "created_at": T0,
        "created_by": "alice",
    }
    values.update(fields)
    return ReleaseRecord(**values)


def api_token(name: str = "ci", **fields: Any) -> ApiTokenRecord:
    values: dict[str, Any] = {
        "name": name,
        "role": Role.OPERATOR,
        "token_hash": sha(f"token-{name}"),
        "created_at": T0,
    }
    values.update(fields)
    return ApiTokenRecord(**values)


def enroll_token(
    name: str = "line-1", *, max_uses: int = 2, expires_at: datetime | None = None
) -> EnrollTokenRecord:
    return EnrollTokenRecord(
        token_hash=sha(f"enroll-{name}"),
        labels={"site": "plant-7", "line": name},
        max_uses=max_uses,
        uses=0,
        expires_at=at(60) if expires_at is None else expires_at,
        created_at=T0,
        created_by="alice",
    )


def audit(
    minutes: float, actor: str = "alice", object_id: str = "sensor", **fields: Any
) -> AuditRecord:
    values: dict[str, Any] = {
        "at": at(minutes),
        "actor": actor,
        "action": "model.push",
        "object_type": "model",
        "object_id": object_id,
        "change": {"minutes": minutes},
    }
    values.update(fields)
    return AuditRecord(**values)


def in_threads(count: int, call: Callable[[int], T]) -> list[T | Exception]:
    """Run ``call(i)`` in ``count`` threads released together; results or exceptions."""
    barrier = threading.Barrier(count)

    def run(index: int) -> T | Exception:
        barrier.wait()
        try:
            return call(index)
        except Exception as exc:  # collected for the caller to assert on
            return exc

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def count_rows(engine: Engine, table: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


# -- the adapter implements the port exactly --------------------------------------------


def test_sql_store_has_every_store_method_with_the_same_signature() -> None:
    methods = [
        name
        for name, member in vars(Store).items()
        if inspect.isfunction(member) and not name.startswith("_")
    ]
    assert len(methods) >= 25
    for name in methods:
        wanted = inspect.signature(getattr(Store, name))
        actual = inspect.signature(getattr(SqlStore, name))
        assert list(actual.parameters.values()) == list(wanted.parameters.values()), name
        if name != "transaction":  # a generator-based context manager, annotated as such
            assert actual.return_annotation == wanted.return_annotation, name


# -- artifacts ----------------------------------------------------------------------------


def test_artifact_round_trips_and_adding_it_again_returns_the_first(store: Store) -> None:
    first = store.add_artifact(artifact("model"))
    again = store.add_artifact(replace(artifact("model"), created_at=at(5), kind="tflite"))

    assert first == artifact("model")
    assert again == first
    assert store.get_artifact(sha("model")) == first
    assert store.get_artifact(sha("missing")) is None


def test_concurrent_adds_of_one_artifact_all_succeed_with_one_row(
    store: Store, engine: Engine
) -> None:
    results = in_threads(12, lambda i: store.add_artifact(artifact("shared", created_at=at(i))))

    assert all(isinstance(result, ArtifactRecord) for result in results), results
    assert len({result.created_at for result in results if isinstance(result, ArtifactRecord)}) == 1
    assert count_rows(engine, "artifact") == 1


# -- model versions -----------------------------------------------------------------------


def test_version_round_trips_with_its_id_and_json_fields(store: Store) -> None:
    store.add_artifact(artifact("drift-ref"))
    parent = add_version(store, version="0.9.0")
    record = version_record(
        version="1.0.0",
        parent_id=parent.id,
        quantization={"mode": "int8-static", "per_channel": True, "calibration": [0.5, 1e-3, None]},
        io_schema={
            "inputs": [{"name": "x", "shape": [None, 4], "dtype": "float32"}],
            "outputs": [],
        },
        validation={"accuracy": 0.9375, "notes": "naïve ✓"},
        reasons=["accuracy below the float parent", "latency not measured"],
        drift_reference_sha256=sha("drift-ref"),
        provenance={"job": {"id": 7, "labels": {"team": "edge"}}},
    )
    store.add_artifact(artifact("sensor-1.0.0"))

    created = store.create_version(record)

    assert created.id > 0 and created.id != parent.id
    assert created == replace(record, id=created.id)
    assert store.get_version("sensor", "1.0.0") == created
    assert store.get_version_by_id(created.id) == created
    assert store.get_version("sensor", "9.9.9") is None
    assert store.get_version_by_id(created.id + 1000) is None


def test_versions_list_oldest_first_and_models_are_distinct_and_sorted(store: Store) -> None:
    late = add_version(store, "vision", "2.0.0", created_at=at(30))
    early = add_version(store, "sensor", "1.0.0", created_at=at(10))
    middle = add_version(store, "vision", "1.0.0", created_at=at(20))
    tied = add_version(store, "sensor", "1.0.1", created_at=at(20))

    assert store.list_versions() == [early, middle, tied, late]
    assert store.list_versions("vision") == [middle, late]
    assert store.list_versions("absent") == []
    assert store.list_models() == ["sensor", "vision"]


def test_duplicate_version_is_a_conflict_naming_it(store: Store) -> None:
    add_version(store, "sensor", "1.0.0")

    with pytest.raises(ConflictError, match=r"sensor 1\.0\.0 already exists"):
        store.create_version(version_record("sensor", "1.0.0"))
    assert len(store.list_versions()) == 1


def test_version_referring_to_missing_things_is_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError, match="artifact"):
        store.create_version(version_record())
    store.add_artifact(artifact("sensor-1.0.0"))
    with pytest.raises(NotFoundError, match="parent model version id 4242"):
        store.create_version(version_record(parent_id=4242))
    with pytest.raises(NotFoundError, match="drift reference"):
        store.create_version(version_record(drift_reference_sha256=sha("absent")))
    assert store.list_versions() == []


def test_update_version_changes_only_the_given_fields(store: Store) -> None:
    store.add_artifact(artifact("drift-ref"))
    created = add_version(
        store, validation={"old": True}, reasons=["not validated"], io_schema={"inputs": []}
    )

    updated = store.update_version(created.id, state=VersionState.VALIDATED, updated_at=at(5))
    assert updated == replace(created, state=VersionState.VALIDATED, updated_at=at(5))

    again = store.update_version(
        created.id,
        validation={"accuracy": 0.91},
        reasons=[],
        io_schema={"inputs": [{"name": "x"}]},
        drift_reference_sha256=sha("drift-ref"),
        updated_at=at(6),
    )
    assert again == replace(
        updated,
        validation={"accuracy": 0.91},
        reasons=[],
        io_schema={"inputs": [{"name": "x"}]},
        drift_reference_sha256=sha("drift-ref"),
        updated_at=at(6),
    )
    assert store.get_version_by_id(created.id) == again


def test_update_version_of_a_missing_id_or_reference_is_not_found(store: Store) -> None:
    created = add_version(store)
    with pytest.raises(NotFoundError, match="model version id 999"):
        store.update_version(999, state=VersionState.REVOKED, updated_at=at(1))
    with pytest.raises(NotFoundError, match="drift reference"):
        store.update_version(created.id, drift_reference_sha256=sha("absent"), updated_at=at(1))
    assert store.get_version_by_id(created.id) == created


# -- releases -------------------------------------------------------------------------------


def test_release_counter_is_one_more_than_the_highest_per_model(store: Store) -> None:
    assert store.next_release_counter("sensor") == 1
    v1, v2 = add_version(store, version="1"), add_version(store, version="2")
    store.create_release(release_record(v1, 1))
    store.create_release(release_record(v2, 7))

    assert store.next_release_counter("sensor") == 8
    assert store.next_release_counter("vision") == 1


def test_release_round_trips_and_lists_by_model_then_counter(store: Store) -> None:
    s1, s2 = add_version(store, "sensor", "1"), add_version(store, "sensor", "2")
    vision = add_version(store, "vision", "1")
    r_s2 = store.create_release(release_record(s2, 2))
    r_v = store.create_release(release_record(vision, 1))
    r_s1 = store.create_release(release_record(s1, 1, revoked_at=at(3), revoke_reason="bad"))

    assert r_s1 == replace(release_record(s1, 1, revoked_at=at(3), revoke_reason="bad"), id=r_s1.id)
    assert r_s1.manifest.endswith(b"\x00\xff")
    assert store.get_release("sensor", 2) == r_s2
    assert store.get_release("sensor", 3) is None
    assert store.get_release_for_version(vision.id) == r_v
    assert store.get_release_for_version(9999) is None
    assert store.list_releases() == [r_s1, r_s2, r_v]
    assert store.list_releases("sensor") == [r_s1, r_s2]


def test_duplicate_release_counter_or_second_release_of_a_version_conflicts(store: Store) -> None:
    v1, v2 = add_version(store, version="1"), add_version(store, version="2")
    store.create_release(release_record(v1, 1))

    with pytest.raises(ConflictError, match="release sensor #1 already exists"):
        store.create_release(release_record(v2, 1))
    with pytest.raises(ConflictError, match=f"model version id {v1.id} already has a release"):
        store.create_release(release_record(v1, 2))
    assert [r.counter for r in store.list_releases()] == [1]


def test_release_of_a_missing_or_foreign_version_is_refused(store: Store) -> None:
    vision = add_version(store, "vision", "1")
    with pytest.raises(NotFoundError, match="model version id 4242"):
        store.create_release(replace(release_record(vision, 1), version_id=4242))
    with pytest.raises(InvalidInputError, match="belongs to vision"):
        store.create_release(replace(release_record(vision, 1), model="sensor"))
    assert store.list_releases() == []


def test_update_release_changes_only_the_given_fields(store: Store) -> None:
    created = store.create_release(release_record(add_version(store), 1))

    signed = store.update_release(created.id, state=ReleaseState.RELEASED, manifest=b"signed")
    assert signed == replace(created, state=ReleaseState.RELEASED, manifest=b"signed")
    revoked = store.update_release(
        created.id, state=ReleaseState.REVOKED, revoked_at=at(9), revoke_reason="drift"
    )
    assert revoked == replace(
        signed, state=ReleaseState.REVOKED, revoked_at=at(9), revoke_reason="drift"
    )
    assert store.get_release("sensor", 1) == revoked
    with pytest.raises(NotFoundError, match="release id 999"):
        store.update_release(999, state=ReleaseState.REVOKED)


# -- revocations --------------------------------------------------------------------------


def test_revocation_is_idempotent_per_model_and_hash(store: Store) -> None:
    first = RevocationRecord(
        sha256=sha("bad"), model="sensor", reason="crash", created_at=at(1), created_by="alice"
    )
    other_model = replace(first, model="vision", created_at=at(2))

    assert store.add_revocation(first) == first
    assert store.add_revocation(replace(first, reason="again", created_at=at(3))) == first
    assert store.add_revocation(other_model) == other_model
    assert store.list_revocations() == [first, other_model]
    assert store.list_revocations("vision") == [other_model]
    assert store.list_revocations("absent") == []


def test_concurrent_revocations_of_one_hash_all_succeed_with_one_row(
    store: Store, engine: Engine
) -> None:
    def revoke(i: int) -> RevocationRecord:
        return store.add_revocation(
            RevocationRecord(
                sha256=sha("bad"),
                model="sensor",
                reason=f"r{i}",
                created_at=at(i),
                created_by="bob",
            )
        )

    results = in_threads(8, revoke)

    assert all(isinstance(result, RevocationRecord) for result in results), results
    assert len({result.reason for result in results if isinstance(result, RevocationRecord)}) == 1
    assert count_rows(engine, "revocation") == 1


# -- operator API tokens --------------------------------------------------------------------


def test_api_tokens_round_trip_list_count_and_update(store: Store) -> None:
    assert store.count_api_tokens() == 0
    admin = store.add_api_token(api_token("admin", role=Role.ADMIN, expires_at=at(600)))
    ci = store.add_api_token(api_token("ci"))

    assert admin.id > 0 and admin == replace(
        api_token("admin", role=Role.ADMIN, expires_at=at(600)), id=admin.id
    )
    assert store.find_api_token(sha("token-ci")) == ci
    assert store.find_api_token(sha("token-nobody")) is None
    assert store.list_api_tokens() == [admin, ci]
    assert store.count_api_tokens() == 2

    used = store.update_api_token(ci.id, last_used_at=at(1))
    assert used == replace(ci, last_used_at=at(1))
    revoked = store.update_api_token(ci.id, revoked_at=at(2))
    assert revoked == replace(used, revoked_at=at(2))
    assert store.count_api_tokens() == 2  # revoked tokens still count
    with pytest.raises(NotFoundError, match="API token id 999"):
        store.update_api_token(999, revoked_at=at(3))


def test_duplicate_api_token_name_or_secret_conflicts(store: Store) -> None:
    store.add_api_token(api_token("ci"))

    with pytest.raises(ConflictError, match="named 'ci' already exists"):
        store.add_api_token(api_token("ci", token_hash=sha("other")))
    with pytest.raises(ConflictError, match="with this secret already exists"):
        store.add_api_token(api_token("ci-2", token_hash=sha("token-ci")))
    assert store.count_api_tokens() == 1


# -- device enrollment tokens --------------------------------------------------------------


def test_enroll_tokens_round_trip(store: Store) -> None:
    first = store.add_enroll_token(enroll_token("line-1"))
    second = store.add_enroll_token(enroll_token("line-2", max_uses=50))

    assert first == replace(enroll_token("line-1"), id=first.id)
    assert store.find_enroll_token(sha("enroll-line-2")) == second
    assert store.find_enroll_token(sha("enroll-absent")) is None
    assert store.list_enroll_tokens() == [first, second]
    with pytest.raises(ConflictError, match="enrollment token with this secret"):
        store.add_enroll_token(enroll_token("line-1"))


def test_enroll_token_counts_uses_up_to_its_limit(store: Store) -> None:
    token = store.add_enroll_token(enroll_token(max_uses=2))

    assert store.use_enroll_token(token.id, at(1)).uses == 1
    assert store.use_enroll_token(token.id, at(2)) == replace(token, uses=2)
    with pytest.raises(StateError, match="used up"):
        store.use_enroll_token(token.id, at(3))
    assert store.find_enroll_token(token.token_hash) == replace(token, uses=2)


def test_expired_enroll_token_is_refused_without_counting(store: Store) -> None:
    token = store.add_enroll_token(enroll_token(expires_at=at(60)))

    with pytest.raises(StateError, match="expired"):
        store.use_enroll_token(token.id, at(60))  # expiry is exclusive
    with pytest.raises(StateError, match="expired"):
        store.use_enroll_token(token.id, at(61).astimezone(IST))
    assert store.use_enroll_token(token.id, at(59).astimezone(NST)).uses == 1
    assert store.find_enroll_token(token.token_hash) == replace(token, uses=1)
    with pytest.raises(NotFoundError):
        store.use_enroll_token(token.id + 1000, at(1))


def test_concurrent_enroll_token_uses_never_exceed_the_limit(store: Store) -> None:
    token = store.add_enroll_token(enroll_token(max_uses=3))

    results = in_threads(10, lambda i: store.use_enroll_token(token.id, at(1)))

    assert sum(isinstance(result, EnrollTokenRecord) for result in results) == 3
    assert all(isinstance(r, EnrollTokenRecord | StateError) for r in results), results
    assert sorted(r.uses for r in results if isinstance(r, EnrollTokenRecord)) == [1, 2, 3]
    found = store.find_enroll_token(token.token_hash)
    assert found is not None and found.uses == 3


# -- audit log ------------------------------------------------------------------------------


def test_audit_lists_newest_first_with_ties_in_insertion_order_reversed(store: Store) -> None:
    a = store.add_audit(audit(1))
    b = store.add_audit(audit(3))
    c = store.add_audit(audit(2))
    d = store.add_audit(audit(3))

    assert a.id > 0 and a == replace(audit(1), id=a.id)
    assert store.list_audit() == [d, b, c, a]
    assert store.list_audit(limit=2) == [d, b]


def test_audit_filters_combine(store: Store) -> None:
    push = store.add_audit(audit(1, actor="alice", object_id="sensor"))
    other = store.add_audit(audit(2, actor="bob", object_id="sensor"))
    token = store.add_audit(
        audit(3, actor="alice", object_type="token", object_id="ci", action="token.create")
    )

    assert store.list_audit(actor="alice") == [token, push]
    assert store.list_audit(object_type="model") == [other, push]
    assert store.list_audit(object_type="model", object_id="sensor", actor="bob") == [other]
    assert store.list_audit(object_id="ci") == [token]
    assert store.list_audit(actor="carol") == []
    with pytest.raises(InvalidInputError, match="limit"):
        store.list_audit(limit=0)


# -- time ----------------------------------------------------------------------------------


def test_times_in_any_zone_come_back_as_the_same_instant_in_utc(store: Store) -> None:
    created_at, updated_at = at(0).astimezone(IST), at(1).astimezone(NST)
    created = add_version(store, created_at=created_at, updated_at=updated_at)

    got = store.get_version_by_id(created.id)
    assert got is not None
    for value, wanted in ((got.created_at, created_at), (got.updated_at, updated_at)):
        assert value == wanted
        assert value.utcoffset() == timedelta(0)
        assert value.microsecond == 123456


def test_times_are_ordered_by_instant_not_by_their_local_text(store: Store) -> None:
    # 10:00+05:30 is 04:30Z, earlier than 05:00Z, though its local text sorts later.
    earlier = store.add_audit(replace(audit(0), at=datetime(2025, 1, 1, 10, 0, tzinfo=IST)))
    later = store.add_audit(replace(audit(0), at=datetime(2025, 1, 1, 5, 0, tzinfo=timezone.utc)))

    assert store.list_audit() == [later, earlier]


def test_naive_times_are_refused(store: Store) -> None:
    with pytest.raises(InvalidInputError, match="naive"):
        store.add_audit(replace(audit(0), at=datetime(2025, 1, 1, 12, 0)))
    assert store.list_audit() == []


# -- transactions --------------------------------------------------------------------------


def test_transaction_commits_everything_at_the_end_of_the_block(
    store: Store, engine: Engine
) -> None:
    outside = SqlStore(engine)
    with store.transaction() as tx:
        version = add_version(tx)
        tx.add_audit(audit(1, object_id=str(version.id)))
        assert tx.get_version_by_id(version.id) == version  # reads its own writes
        assert outside.get_version_by_id(version.id) is None  # others do not, yet

    assert store.get_version_by_id(version.id) == version
    assert [entry.object_id for entry in store.list_audit()] == [str(version.id)]


def test_transaction_rolls_everything_back_when_the_block_raises(store: Store) -> None:
    with pytest.raises(RuntimeError, match="boom"), store.transaction() as tx:
        add_version(tx)
        tx.add_api_token(api_token())
        tx.add_audit(audit(1))
        raise RuntimeError("boom")

    assert store.get_artifact(sha("sensor-1.0.0")) is None
    assert store.list_versions() == []
    assert store.count_api_tokens() == 0
    assert store.list_audit() == []


def test_a_failed_write_leaves_the_transaction_usable(store: Store) -> None:
    with store.transaction() as tx:
        first = add_version(tx)
        with pytest.raises(ConflictError):
            tx.create_version(version_record())
        with pytest.raises(StateError):
            tx.use_enroll_token(tx.add_enroll_token(enroll_token(expires_at=at(0))).id, at(1))
        tx.add_audit(audit(1))

    assert store.list_versions() == [first]
    assert len(store.list_enroll_tokens()) == 1
    assert len(store.list_audit()) == 1


def test_nested_transaction_rolls_back_only_its_own_writes(store: Store) -> None:
    with store.transaction() as tx:
        tx.add_artifact(artifact("kept"))
        with pytest.raises(RuntimeError), tx.transaction() as inner:
            inner.add_artifact(artifact("dropped"))
            raise RuntimeError("inner")

    assert store.get_artifact(sha("kept")) is not None
    assert store.get_artifact(sha("dropped")) is None


def test_a_transaction_store_cannot_be_used_after_its_block(store: Store) -> None:
    with store.transaction() as tx:
        tx.add_artifact(artifact())

    with pytest.raises(StateError, match="transaction has ended"):
        tx.add_artifact(artifact("late"))
    assert store.get_artifact(sha("late")) is None
