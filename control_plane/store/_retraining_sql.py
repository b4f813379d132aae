"""The retraining half of the SQL adapter: drift policies, triggers and their leases.

Theory of operation: :class:`RetrainingSql` holds the
:class:`~control_plane.store.retraining_port.RetrainingStore` methods on top
of :class:`~control_plane.store._sessions.SessionScope`, like the rollout
methods. :class:`SqlRetrainingStore` is the full SQL store with them, so a
transaction on it can write a trigger and its audit entry together. Every
state change is one conditional UPDATE (compare-and-set): it takes the row
lock on PostgreSQL and runs under the write lock taken at ``BEGIN IMMEDIATE``
on SQLite, so a check and its write cannot race. The uniqueness of
``(policy, idempotency_key)`` is the database's, not a read-then-write.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlmodel import col

from control_plane.db.tables import DriftPolicyRow, RetrainingTriggerRow
from control_plane.errors import NotFoundError, StateError
from control_plane.store._rows import insert, to_record
from control_plane.store._sessions import SessionScope
from control_plane.store.retraining_records import (
    DriftPolicyRecord,
    TriggerRecord,
    TriggerStatus,
)
from control_plane.store.sql import SqlStore

_OPEN = (TriggerStatus.PENDING.value, TriggerStatus.FIRING.value)


class RetrainingSql(SessionScope):
    """Retraining methods of the SQL store."""

    # -- policies ---------------------------------------------------------------------------
    def get_policy(self, name: str) -> DriftPolicyRecord | None:
        return self._one(
            select(DriftPolicyRow).where(col(DriftPolicyRow.name) == name), DriftPolicyRecord
        )

    def list_policies(self, model: str | None = None) -> list[DriftPolicyRecord]:
        query = select(DriftPolicyRow).order_by(col(DriftPolicyRow.name))
        if model is not None:
            query = query.where(col(DriftPolicyRow.model) == model)
        return self._all(query, DriftPolicyRecord)

    def add_policy(self, record: DriftPolicyRecord) -> DriftPolicyRecord:
        duplicates = {"pk_drift_policy": f"a drift policy named {record.name!r} already exists"}
        with self._write(f"drift policy {record.name}", duplicates) as session:
            return insert(session, DriftPolicyRow(**vars(record)), DriftPolicyRecord)

    def update_policy(
        self,
        name: str,
        *,
        model: str,
        cohort: str | None,
        spec: dict[str, Any],
        spec_digest: str,
        now: datetime,
        expect_revision: int,
    ) -> DriftPolicyRecord:
        with self._write(f"drift policy {name}") as session:
            session.execute(
                update(DriftPolicyRow)
                .where(
                    col(DriftPolicyRow.name) == name,
                    col(DriftPolicyRow.revision) == expect_revision,
                )
                .values(
                    model=model,
                    cohort=cohort,
                    spec=spec,
                    spec_digest=spec_digest,
                    updated_at=now,
                    revision=expect_revision + 1,
                )
                .execution_options(synchronize_session=False)
            )
            row = session.get(DriftPolicyRow, name, populate_existing=True)
            if row is None or row.revision != expect_revision + 1 or row.spec_digest != spec_digest:
                raise StateError(f"drift policy {name} changed meanwhile; apply again")
            return to_record(DriftPolicyRecord, row)

    def delete_policy(self, name: str) -> None:
        with self._write(f"drift policy {name}") as session:
            result = session.execute(delete(DriftPolicyRow).where(col(DriftPolicyRow.name) == name))
            if getattr(result, "rowcount", 0) != 1:
                raise NotFoundError(f"drift policy {name} not found")

    def lock_policy(self, name: str) -> DriftPolicyRecord:
        with self._write(f"drift policy {name}") as session:
            session.execute(
                update(DriftPolicyRow)
                .where(col(DriftPolicyRow.name) == name)
                .values(trigger_count=col(DriftPolicyRow.trigger_count) + 1)
                .execution_options(synchronize_session=False)
            )
            row = session.get(DriftPolicyRow, name, populate_existing=True)
            if row is None:
                raise NotFoundError(f"drift policy {name} not found")
            return to_record(DriftPolicyRecord, row)

    # -- triggers ---------------------------------------------------------------------------
    def add_trigger(self, record: TriggerRecord) -> TriggerRecord:
        duplicates = {
            "uq_retraining_trigger_policy_idempotency_key": (
                f"policy {record.policy} already fired for key {record.idempotency_key}"
            )
        }
        with self._write(f"trigger {record.idempotency_key}", duplicates) as session:
            values = vars(record).copy()
            values["id"] = None
            return insert(session, RetrainingTriggerRow(**values), TriggerRecord)

    def get_trigger(self, trigger_id: int) -> TriggerRecord | None:
        return self._one(
            select(RetrainingTriggerRow).where(col(RetrainingTriggerRow.id) == trigger_id),
            TriggerRecord,
        )

    def find_trigger(self, policy: str, idempotency_key: str) -> TriggerRecord | None:
        return self._one(
            select(RetrainingTriggerRow).where(
                col(RetrainingTriggerRow.policy) == policy,
                col(RetrainingTriggerRow.idempotency_key) == idempotency_key,
            ),
            TriggerRecord,
        )

    def last_trigger(
        self, policy: str, *, statuses: Collection[TriggerStatus], manual: bool | None = None
    ) -> TriggerRecord | None:
        query = select(RetrainingTriggerRow).where(
            col(RetrainingTriggerRow.policy) == policy,
            col(RetrainingTriggerRow.status).in_([s.value for s in statuses]),
        )
        if manual is not None:
            query = query.where(col(RetrainingTriggerRow.manual) == manual)
        query = query.order_by(
            col(RetrainingTriggerRow.created_at).desc(), col(RetrainingTriggerRow.id).desc()
        ).limit(1)
        return self._one(query, TriggerRecord)

    def list_triggers(
        self,
        *,
        policy: str | None = None,
        model: str | None = None,
        statuses: Collection[TriggerStatus] | None = None,
        limit: int = 200,
    ) -> list[TriggerRecord]:
        query = select(RetrainingTriggerRow)
        if policy is not None:
            query = query.where(col(RetrainingTriggerRow.policy) == policy)
        if model is not None:
            query = query.where(col(RetrainingTriggerRow.model) == model)
        if statuses is not None:
            query = query.where(col(RetrainingTriggerRow.status).in_([s.value for s in statuses]))
        query = query.order_by(
            col(RetrainingTriggerRow.created_at).desc(), col(RetrainingTriggerRow.id).desc()
        ).limit(limit)
        return self._all(query, TriggerRecord)

    def claim_triggers(self, owner: str, now: datetime, limit: int = 20) -> list[TriggerRecord]:
        table = RetrainingTriggerRow
        claimable = and_(
            col(table.status).in_(_OPEN),
            col(table.next_attempt_at) <= now,
            or_(
                col(table.lease_owner).is_(None),
                col(table.lease_owner) == owner,
                col(table.lease_until) < now,
            ),
        )
        with self._write("trigger leases") as session:
            candidates = (
                select(RetrainingTriggerRow)
                .where(claimable)
                .order_by(col(table.next_attempt_at), col(table.id))
                .limit(limit)
            )
            if session.get_bind().dialect.name == "postgresql":
                candidates = candidates.with_for_update(skip_locked=True)
            claimed = []
            for row in list(session.scalars(candidates)):
                # One CAS per row: its lease length is its own (its longest action timeout).
                try:
                    self._compare_and_set(
                        session,
                        table,
                        row.id or 0,
                        [col(table.revision) == row.revision, claimable],
                        {
                            "status": TriggerStatus.FIRING.value,
                            "lease_owner": owner,
                            "lease_until": now + timedelta(seconds=row.lease_s),
                            "revision": row.revision + 1,
                            "updated_at": now,
                        },
                        f"trigger {row.id} was claimed meanwhile",
                    )
                except StateError:
                    continue  # another worker took it between the SELECT and the UPDATE
                stored = session.get(table, row.id, populate_existing=True)
                assert stored is not None
                claimed.append(to_record(TriggerRecord, stored))
            return claimed

    def save_trigger(
        self,
        trigger_id: int,
        *,
        owner: str,
        expect_revision: int,
        status: TriggerStatus,
        actions: list[dict[str, Any]],
        attempts: int,
        last_error: str | None,
        next_attempt_at: datetime,
        now: datetime,
        release_lease: bool,
        lease_until: datetime | None = None,
    ) -> TriggerRecord:
        table = RetrainingTriggerRow
        values: dict[str, Any] = {
            "status": status.value,
            "actions": actions,
            "attempts": attempts,
            "last_error": last_error,
            "next_attempt_at": next_attempt_at,
            "updated_at": now,
            "revision": expect_revision + 1,
            "finished_at": now if status.finished else None,
        }
        if release_lease:
            values.update(lease_owner=None, lease_until=None)
        elif lease_until is not None:
            values["lease_until"] = lease_until
        with self._write(f"trigger {trigger_id}") as session:
            self._compare_and_set(
                session,
                table,
                trigger_id,
                [col(table.revision) == expect_revision, col(table.lease_owner) == owner],
                values,
                f"trigger {trigger_id} is no longer held by {owner}",
            )
            row = session.get(table, trigger_id, populate_existing=True)
            assert row is not None
            return to_record(TriggerRecord, row)


class SqlRetrainingStore(SqlStore, RetrainingSql):
    """The SQL store with the retraining methods (a ``RetrainingStore``)."""


def retraining_store(store: object) -> SqlRetrainingStore:
    """The retraining store on ``store``'s database (``store`` itself when it has the methods)."""
    if isinstance(store, SqlRetrainingStore):
        return store
    if isinstance(store, SessionScope):
        return SqlRetrainingStore(store._engine)  # same package, same engine
    raise TypeError(f"{type(store).__name__} is not a SQL store")


__all__ = ["RetrainingSql", "SqlRetrainingStore", "retraining_store"]
