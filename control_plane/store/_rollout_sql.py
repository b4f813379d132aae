"""The rollout half of the SQL adapter: rollouts, their targets and leases.

Theory of operation: :class:`RolloutSql` holds the
:class:`~control_plane.store.rollout_port.RolloutStore` methods;
:class:`~control_plane.store.sql.SqlStore` inherits them, so sessions,
transactions and error mapping are those of
:class:`~control_plane.store._sessions.SessionScope`. Every state change is one
conditional ``UPDATE`` (compare-and-set), which takes the row lock on
PostgreSQL and runs under the write lock taken at ``BEGIN IMMEDIATE`` on
SQLite, so the check and the write cannot race. Targets are inserted in bulk
(``executemany``), in chunks.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, and_, func, insert, or_, select, update
from sqlmodel import col

from control_plane.db.tables import DeviceAssignmentRow, DeviceRow, RolloutDeviceRow, RolloutRow
from control_plane.errors import InvalidInputError, StateError
from control_plane.store._rows import insert as insert_row
from control_plane.store._rows import to_record
from control_plane.store._sessions import SessionScope
from control_plane.store.records import DeviceAssignmentRecord, DeviceRecord
from control_plane.store.rollout_records import (
    DeviceProgress,
    RolloutDeviceRecord,
    RolloutRecord,
    TargetStatus,
    WaveTally,
)

_CHUNK = 500
#: Target statuses that tie a device to its rollout (others leave it free).
_HOLDING = (
    TargetStatus.PENDING,
    TargetStatus.INSTALLING,
    TargetStatus.COMMITTED,
    TargetStatus.FAILED,
    TargetStatus.REVERTED,
)


def _target_values(record: RolloutDeviceRecord) -> dict[str, Any]:
    return {
        "rollout_id": record.rollout_id,
        "device_id": record.device_id,
        "wave": record.wave,
        "order_key": record.order_key,
        "status": record.status.value,
        "stratum": record.stratum,
        "attempts": record.attempts,
        "sequence": record.sequence,
        "assigned_at": record.assigned_at,
        "finished_at": record.finished_at,
        "previous_release": record.previous_release,
        "revert_sequence": record.revert_sequence,
        "reason": record.reason,
    }


class RolloutSql(SessionScope):
    """Rollout methods of the SQL store."""

    def add_rollout(
        self, record: RolloutRecord, targets: list[RolloutDeviceRecord]
    ) -> RolloutRecord:
        duplicates = {
            "pk_rollout": f"a rollout with id {record.id} already exists",
            "uq_rollout_name": f"a rollout named {record.name!r} already exists",
        }
        with self._write(f"rollout {record.name}", duplicates) as session:
            stored = insert_row(session, RolloutRow(**vars(record)), RolloutRecord)
            self._insert_targets(session, targets)
            return stored

    @staticmethod
    def _insert_targets(session: Any, targets: list[RolloutDeviceRecord]) -> None:
        rows = [_target_values(t) for t in targets]
        for start in range(0, len(rows), _CHUNK):
            session.execute(insert(RolloutDeviceRow), rows[start : start + _CHUNK])

    def get_rollout(self, rollout_id: str) -> RolloutRecord | None:
        with self._read() as session:
            row = session.get(RolloutRow, rollout_id)
            return None if row is None else to_record(RolloutRecord, row)

    def find_rollout(self, name: str) -> RolloutRecord | None:
        return self._one(select(RolloutRow).where(col(RolloutRow.name) == name), RolloutRecord)

    def list_rollouts(
        self, *, phases: Collection[str] | None = None, model: str | None = None, limit: int = 200
    ) -> list[RolloutRecord]:
        if limit < 1:
            raise InvalidInputError(f"limit must be at least 1, not {limit}")
        query = (
            select(RolloutRow)
            .order_by(col(RolloutRow.created_at).desc(), col(RolloutRow.id).desc())
            .limit(limit)
        )
        if phases is not None:
            query = query.where(col(RolloutRow.phase).in_(list(phases)))
        if model is not None:
            query = query.where(col(RolloutRow.model) == model)
        return self._all(query, RolloutRecord)

    def save_rollout(
        self,
        rollout_id: str,
        *,
        phase: str,
        state: dict[str, Any],
        expect_revision: int,
        now: datetime,
        owner: str | None = None,
    ) -> RolloutRecord:
        conditions = [col(RolloutRow.revision) == expect_revision]
        if owner is not None:
            conditions.append(col(RolloutRow.lease_owner) == owner)
        with self._write(f"rollout {rollout_id}") as session:
            query = (
                update(RolloutRow)
                .where(col(RolloutRow.id) == rollout_id, *conditions)
                .values(phase=phase, state=state, revision=expect_revision + 1, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if cast("CursorResult[Any]", session.execute(query)).rowcount != 1:
                raise StateError(
                    f"rollout {rollout_id} changed since it was read (revision {expect_revision}"
                    + (f", lease of {owner}" if owner else "")
                    + "); read it again"
                )
            row = session.get(RolloutRow, rollout_id, populate_existing=True)
            assert row is not None
            return to_record(RolloutRecord, row)

    def claim_rollouts(
        self, owner: str, phases: Collection[str], now: datetime, until: datetime, limit: int = 50
    ) -> list[RolloutRecord]:
        claimable = and_(
            col(RolloutRow.phase).in_(list(phases)),
            or_(
                col(RolloutRow.lease_owner).is_(None),
                col(RolloutRow.lease_owner) == owner,
                col(RolloutRow.lease_until) < now,
            ),
        )
        with self._write("rollout leases") as session:
            candidates = (
                select(col(RolloutRow.id))
                .where(claimable)
                .order_by(col(RolloutRow.created_at))
                .limit(limit)
            )
            if session.get_bind().dialect.name == "postgresql":
                candidates = candidates.with_for_update(skip_locked=True)
            ids = list(session.scalars(candidates))
            if not ids:
                return []
            session.execute(
                update(RolloutRow)
                .where(col(RolloutRow.id).in_(ids), claimable)
                .values(lease_owner=owner, lease_until=until)
                .execution_options(synchronize_session=False)
            )
            rows = session.scalars(
                select(RolloutRow).where(
                    col(RolloutRow.id).in_(ids), col(RolloutRow.lease_owner) == owner
                )
            )
            return [to_record(RolloutRecord, row) for row in rows]

    def release_rollout(self, rollout_id: str, owner: str) -> None:
        with self._write(f"rollout {rollout_id}") as session:
            session.execute(
                update(RolloutRow)
                .where(col(RolloutRow.id) == rollout_id, col(RolloutRow.lease_owner) == owner)
                .values(lease_owner=None, lease_until=None)
                .execution_options(synchronize_session=False)
            )

    # -- targets -------------------------------------------------------------------------
    def add_targets(self, targets: list[RolloutDeviceRecord]) -> int:
        if not targets:
            return 0
        by_rollout: dict[str, list[RolloutDeviceRecord]] = {}
        for target in targets:
            by_rollout.setdefault(target.rollout_id, []).append(target)
        added = 0
        with self._write("rollout targets") as session:
            for rollout_id, group in by_rollout.items():
                known = set(
                    session.scalars(
                        select(col(RolloutDeviceRow.device_id)).where(
                            col(RolloutDeviceRow.rollout_id) == rollout_id
                        )
                    )
                )
                new = [t for t in group if t.device_id not in known]
                self._insert_targets(session, new)
                added += len(new)
        return added

    def target_device_ids(self, rollout_id: str) -> set[str]:
        query = select(col(RolloutDeviceRow.device_id)).where(
            col(RolloutDeviceRow.rollout_id) == rollout_id
        )
        with self._read() as session:
            return set(session.scalars(query))

    def claimed_devices(
        self, model: str, phases: Collection[str], *, exclude: str | None = None
    ) -> dict[str, str]:
        query = (
            select(col(RolloutDeviceRow.device_id), col(RolloutDeviceRow.rollout_id))
            .join(RolloutRow, col(RolloutRow.id) == col(RolloutDeviceRow.rollout_id))
            .where(
                col(RolloutRow.model) == model,
                col(RolloutRow.phase).in_(list(phases)),
                col(RolloutDeviceRow.status).in_([s.value for s in _HOLDING]),
            )
        )
        if exclude is not None:
            query = query.where(col(RolloutRow.id) != exclude)
        with self._read() as session:
            return {str(d): str(r) for d, r in session.execute(query)}

    def tally(self, rollout_id: str) -> WaveTally:
        query = (
            select(col(RolloutDeviceRow.wave), col(RolloutDeviceRow.status), func.count())
            .where(col(RolloutDeviceRow.rollout_id) == rollout_id)
            .group_by(col(RolloutDeviceRow.wave), col(RolloutDeviceRow.status))
        )
        tally = WaveTally()
        with self._read() as session:
            for wave, status, count in session.execute(query):
                tally.counts.setdefault(int(wave), {})[TargetStatus(status)] = int(count)
        return tally

    def list_targets(
        self,
        rollout_id: str,
        *,
        statuses: Collection[TargetStatus] | None = None,
        max_wave: int | None = None,
        wave: int | None = None,
        limit: int = 1000,
    ) -> list[RolloutDeviceRecord]:
        if limit < 1:
            raise InvalidInputError(f"limit must be at least 1, not {limit}")
        query = (
            select(RolloutDeviceRow)
            .where(col(RolloutDeviceRow.rollout_id) == rollout_id)
            .order_by(col(RolloutDeviceRow.wave), col(RolloutDeviceRow.order_key))
            .limit(limit)
        )
        if statuses is not None:
            query = query.where(col(RolloutDeviceRow.status).in_([s.value for s in statuses]))
        if max_wave is not None:
            query = query.where(col(RolloutDeviceRow.wave) <= max_wave)
        if wave is not None:
            query = query.where(col(RolloutDeviceRow.wave) == wave)
        return self._all(query, RolloutDeviceRecord)

    def in_progress(self, rollout_id: str) -> list[DeviceProgress]:
        query = (
            select(
                RolloutDeviceRow,
                col(DeviceRow.desired_sequence),
                col(DeviceRow.state_sequence),
                col(DeviceRow.state),
                col(DeviceRow.last_reason),
                col(DeviceRow.decommissioned_at),
            )
            .join(DeviceRow, col(DeviceRow.id) == col(RolloutDeviceRow.device_id))
            .where(
                col(RolloutDeviceRow.rollout_id) == rollout_id,
                col(RolloutDeviceRow.status) == TargetStatus.INSTALLING.value,
            )
        )
        with self._read() as session:
            return [
                DeviceProgress(
                    target=to_record(RolloutDeviceRecord, row),
                    desired_sequence=int(desired),
                    state_sequence=None if seq is None else int(seq),
                    state=None if state is None else str(state.value),
                    reason=reason,
                    decommissioned=gone is not None,
                )
                for row, desired, seq, state, reason, gone in session.execute(query)
            ]

    def assigned_since(self, rollout_id: str, since: datetime) -> int:
        query = select(func.count()).where(
            col(RolloutDeviceRow.rollout_id) == rollout_id,
            col(RolloutDeviceRow.assigned_at) >= since,
        )
        with self._read() as session:
            return int(session.scalar(query) or 0)

    def mark_assigned(
        self,
        target_id: int,
        *,
        sequence: int,
        now: datetime,
        previous_release: int | None,
        retry: bool = False,
    ) -> None:
        expect = [TargetStatus.PENDING.value]
        if retry:
            expect.append(TargetStatus.INSTALLING.value)
        with self._write(f"rollout target {target_id}") as session:
            query = (
                update(RolloutDeviceRow)
                .where(
                    col(RolloutDeviceRow.id) == target_id,
                    col(RolloutDeviceRow.status).in_(expect),
                )
                .values(
                    status=TargetStatus.INSTALLING.value,
                    sequence=sequence,
                    assigned_at=now,
                    attempts=col(RolloutDeviceRow.attempts) + 1,
                    previous_release=previous_release,
                    reason=None,
                )
                .execution_options(synchronize_session=False)
            )
            if cast("CursorResult[Any]", session.execute(query)).rowcount != 1:
                raise StateError(f"rollout target {target_id} is no longer pending")

    def update_target(
        self,
        target_id: int,
        *,
        status: TargetStatus,
        expect: Collection[TargetStatus],
        now: datetime,
        reason: str | None = None,
        revert_sequence: int | None = None,
    ) -> bool:
        values: dict[str, Any] = {"status": status.value, "finished_at": now}
        if reason is not None:
            values["reason"] = reason[:2000]
        if revert_sequence is not None:
            values["revert_sequence"] = revert_sequence
        with self._write(f"rollout target {target_id}") as session:
            query = (
                update(RolloutDeviceRow)
                .where(
                    col(RolloutDeviceRow.id) == target_id,
                    col(RolloutDeviceRow.status).in_([s.value for s in expect]),
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            return cast("CursorResult[Any]", session.execute(query)).rowcount == 1

    def get_devices(self, device_ids: Collection[str]) -> dict[str, DeviceRecord]:
        ids = sorted(set(device_ids))
        found: dict[str, DeviceRecord] = {}
        with self._read() as session:
            for start in range(0, len(ids), _CHUNK):
                query = select(DeviceRow).where(col(DeviceRow.id).in_(ids[start : start + _CHUNK]))
                found.update(
                    (row.id, to_record(DeviceRecord, row)) for row in session.scalars(query)
                )
        return found

    def latest_assignments_of(self, model: str, release: int) -> list[DeviceAssignmentRecord]:
        query = (
            select(DeviceAssignmentRow)
            .join(
                DeviceRow,
                and_(
                    col(DeviceAssignmentRow.device_id) == col(DeviceRow.id),
                    col(DeviceAssignmentRow.sequence) == col(DeviceRow.desired_sequence),
                ),
            )
            .where(
                col(DeviceRow.decommissioned_at).is_(None),
                col(DeviceAssignmentRow.model) == model,
                col(DeviceAssignmentRow.release) == release,
            )
            .order_by(col(DeviceAssignmentRow.device_id))
        )
        return self._all(query, DeviceAssignmentRecord)


__all__ = ["RolloutSql"]
