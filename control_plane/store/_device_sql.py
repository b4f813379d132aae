"""The device half of the SQL adapter: devices, assignments and status reports.

Theory of operation: :class:`DeviceSql` holds the :class:`~control_plane.store.port.Store`
methods about devices; :class:`~control_plane.store.sql.SqlStore` inherits them,
so sessions, transactions and error mapping are the ones of
:class:`~control_plane.store._sessions.SessionScope`.

Invariants:

* A device's assignment sequence moves by one conditional ``UPDATE ... SET
  desired_sequence = desired_sequence + 1``: the row lock (PostgreSQL) or the
  write lock taken at BEGIN (SQLite) orders concurrent allocations, so no two
  share a number. A device's *latest* assignment is the one at its
  ``desired_sequence``.
* Reports are unique per ``(device_id, seq)``; a batch inserts the new ones in
  one SAVEPOINT and falls back to one SAVEPOINT per report if a concurrent
  writer stored some meanwhile. The device's state moves only with a report
  above ``last_seq``, again by a conditional UPDATE, so of two racing batches
  the newer report wins whatever the commit order.
* The per-report and per-assignment paths read the device row by column, not
  as an ORM object, and expire any ORM copy the session holds after their
  UPDATEs, so nothing later in the transaction sees stale values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlmodel import col

from control_plane.db.tables import DeviceAssignmentRow, DeviceReportRow, DeviceRow
from control_plane.errors import InvalidInputError, NotFoundError, StateError
from control_plane.store._device_statements import (
    STATE_COLUMNS,
    active_and_stored_statement,
    allocate_statement,
    device_exists_statement,
    insert_assignment_statement,
    insert_reports_statement,
    latest_assignment_statement,
    mark_published_statement,
    records,
    report_values,
    state_values,
    table,
    touch_statement,
)
from control_plane.store._rows import insert, require, to_record, to_row
from control_plane.store._sessions import SessionScope
from control_plane.store.records import (
    DeviceAssignmentRecord,
    DeviceRecord,
    DeviceReportRecord,
    ReportsResult,
)
from fleetcore.protocol import UpdateState

#: Ids per ``IN (...)`` list; keeps statements small on every database.
_IN_CHUNK = 500


def _active(session: Session, device_id: str) -> DeviceRow:
    row = require(session, DeviceRow, device_id, f"device {device_id}")
    if row.decommissioned_at is not None:
        raise StateError(f"device {device_id} was decommissioned")
    return row


def _device_flags(session: Session, device_id: str, *columns: Any) -> Any:
    """Some columns of a device row, read without loading the row as an ORM object."""
    return session.execute(select(*columns).where(col(DeviceRow.id) == device_id)).one_or_none()


def _forget(session: Session, device_id: str) -> None:
    """Expire the session's copy of the device row, if any, after a bulk UPDATE of it.

    Statements here update the row with ``synchronize_session=False`` and read
    back only the columns they need, so an ORM copy loaded earlier in the same
    transaction would otherwise keep stale values.
    """
    found = session.identity_map.get(session.identity_key(DeviceRow, device_id))
    if found is not None:
        session.expire(found)


def _latest() -> Select[DeviceAssignmentRow]:
    """Each device's assignment at its desired sequence (active devices only)."""
    return (
        select(DeviceAssignmentRow)
        .join(
            DeviceRow,
            and_(
                col(DeviceAssignmentRow.device_id) == col(DeviceRow.id),
                col(DeviceAssignmentRow.sequence) == col(DeviceRow.desired_sequence),
            ),
        )
        .where(col(DeviceRow.decommissioned_at).is_(None))
    )


class DeviceSql(SessionScope):
    """Device, assignment and report methods of the SQL store."""

    # -- devices ---------------------------------------------------------------------
    def add_device(self, record: DeviceRecord) -> DeviceRecord:
        duplicates = {
            "pk_device": f"a device with id {record.id} already exists",
            "uq_device_keyid": f"a device with public key {record.keyid[:16]}… is already enrolled",
            "uq_device_token_hash": "a device with this token already exists",
        }
        with self._write(f"device {record.id}", duplicates) as session:
            return insert(session, to_row(DeviceRow, record), DeviceRecord)

    def get_device(self, device_id: str) -> DeviceRecord | None:
        with self._read() as session:
            row = session.get(DeviceRow, device_id)
            return None if row is None else to_record(DeviceRecord, row)

    def find_device_by_token(self, token_hash: str) -> DeviceRecord | None:
        query = select(DeviceRow).where(col(DeviceRow.token_hash) == token_hash)
        return self._one(query, DeviceRecord)

    def list_devices(
        self,
        *,
        labels: dict[str, str] | None = None,
        state: UpdateState | None = None,
        include_decommissioned: bool = False,
        after: str | None = None,
        limit: int = 1000,
    ) -> list[DeviceRecord]:
        if limit < 1:
            raise InvalidInputError(f"limit must be at least 1, not {limit}")
        c = table(DeviceRow).c
        query = select(table(DeviceRow)).order_by(c.id).limit(limit)
        for key, value in sorted((labels or {}).items()):
            query = query.where(c.labels[key].as_string() == value)
        if state is not None:
            query = query.where(c.state == state)
        if not include_decommissioned:
            query = query.where(c.decommissioned_at.is_(None))
        if after is not None:
            query = query.where(c.id > after)
        with self._read() as session:  # Core rows: a whole fleet pages through here
            return records(session.execute(query), DeviceRecord)

    def update_device_labels(self, device_id: str, labels: dict[str, str]) -> DeviceRecord:
        with self._write(f"device {device_id}") as session:
            row = _active(session, device_id)
            row.labels = dict(sorted(labels.items()))
            session.flush()
            return to_record(DeviceRecord, row)

    def decommission_device(self, device_id: str, now: datetime) -> DeviceRecord:
        with self._write(f"device {device_id}") as session:
            row = _active(session, device_id)
            row.decommissioned_at = now
            row.online = False
            session.flush()
            return to_record(DeviceRecord, row)

    def set_presence(self, device_id: str, online: bool, seen_at: datetime | None) -> DeviceRecord:
        with self._write(f"device {device_id}") as session:
            row = _active(session, device_id)
            row.online = online
            if seen_at is not None and (row.last_seen is None or row.last_seen < seen_at):
                row.last_seen = seen_at
            session.flush()
            return to_record(DeviceRecord, row)

    def touch_device(self, device_id: str, seen_at: datetime) -> None:
        with self._write(f"device {device_id}") as session:
            session.execute(
                update(DeviceRow)
                .where(col(DeviceRow.id) == device_id)
                .where(col(DeviceRow.decommissioned_at).is_(None))
                .where(or_(col(DeviceRow.last_seen).is_(None), col(DeviceRow.last_seen) < seen_at))
                .values(last_seen=seen_at)
            )

    def count_malformed_reports(self, device_id: str, count: int) -> DeviceRecord:
        what = f"device {device_id}"
        with self._write(what) as session:
            session.execute(
                update(DeviceRow)
                .where(col(DeviceRow.id) == device_id)
                .values(malformed_reports=col(DeviceRow.malformed_reports) + count)
                .execution_options(synchronize_session=False)
            )
            row = session.get(DeviceRow, device_id, populate_existing=True)
            if row is None:
                raise NotFoundError(f"{what} not found")
            return to_record(DeviceRecord, row)

    def mqtt_accounts(self) -> list[tuple[str, str]]:
        query = (
            select(col(DeviceRow.id), col(DeviceRow.mqtt_password_hash))
            .where(col(DeviceRow.decommissioned_at).is_(None))
            .order_by(col(DeviceRow.id))
        )
        with self._read() as session:
            return [(str(i), str(h)) for i, h in session.execute(query)]

    # -- assignments -------------------------------------------------------------------
    def next_assignment_sequence(self, device_id: str, *, expect_current: int | None = None) -> int:
        what = f"device {device_id}"
        params = {"a_id": device_id, "a_expect": expect_current}
        with self._write(what) as session:
            allocated = session.scalar(allocate_statement(expect_current is not None), params)
            _forget(session, device_id)
            if allocated is not None:
                return int(allocated)
            row = _device_flags(
                session,
                device_id,
                col(DeviceRow.desired_sequence),
                col(DeviceRow.decommissioned_at),
            )
            if row is None:
                raise NotFoundError(f"{what} not found")
            sequence, decommissioned_at = row
            if decommissioned_at is not None:
                raise StateError(f"{what} was decommissioned")
            raise StateError(f"{what} is at assignment sequence {sequence}, not {expect_current}")

    def add_assignment(self, record: DeviceAssignmentRecord) -> DeviceAssignmentRecord:
        name = f"assignment {record.sequence} of device {record.device_id}"
        duplicates = {"uq_device_assignment_device_id_sequence": f"{name} already exists"}
        values = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
        del values["id"]
        with self._write(name, duplicates) as session:
            found = session.execute(device_exists_statement(), {"e_id": record.device_id})
            if found.first() is None:
                raise NotFoundError(f"device {record.device_id} not found")
            row_id = session.scalar(insert_assignment_statement(), values)
            return dataclasses.replace(record, id=int(row_id or 0))

    def latest_assignment(self, device_id: str) -> DeviceAssignmentRecord | None:
        with self._read() as session:
            rows = session.execute(latest_assignment_statement(), {"device_id": device_id})
            found = records(rows, DeviceAssignmentRecord)
        return found[0] if found else None

    def desired_sequences(self, device_ids: Collection[str]) -> dict[str, int]:
        ids = sorted(set(device_ids))
        found: dict[str, int] = {}
        with self._read() as session:
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                query = select(col(DeviceRow.id), col(DeviceRow.desired_sequence)).where(
                    col(DeviceRow.id).in_(chunk)
                )
                found.update((str(i), int(s)) for i, s in session.execute(query))
        return found

    def assignments_expiring(
        self, before: datetime, *, limit: int = 500
    ) -> list[DeviceAssignmentRecord]:
        query = (
            _latest()
            .where(col(DeviceAssignmentRow.expires_at) < before)
            .order_by(col(DeviceAssignmentRow.expires_at), col(DeviceAssignmentRow.id))
            .limit(limit)
        )
        return self._all(query, DeviceAssignmentRecord)

    def unpublished_assignments(self, *, limit: int = 1000) -> list[DeviceAssignmentRecord]:
        query = (
            _latest()
            .where(col(DeviceAssignmentRow.published_at).is_(None))
            .order_by(col(DeviceAssignmentRow.id))
            .limit(limit)
        )
        return self._all(query, DeviceAssignmentRecord)

    def mark_assignment_published(self, device_id: str, sequence: int, now: datetime) -> None:
        params = {"p_id": device_id, "p_sequence": sequence, "p_now": now}
        with self._write(f"assignment {sequence} of device {device_id}") as session:
            session.execute(mark_published_statement(), params)

    # -- status reports -------------------------------------------------------------------
    def add_reports(
        self, device_id: str, reports: list[DeviceReportRecord], now: datetime
    ) -> ReportsResult:
        unique: dict[int, DeviceReportRecord] = {}
        for report in reports:
            if report.device_id != device_id:
                raise InvalidInputError(
                    f"report {report.seq} is from {report.device_id}, not {device_id}"
                )
            unique.setdefault(report.seq, report)
        with self._write(f"reports of device {device_id}") as session:
            stored = self._active_and_stored(session, device_id, list(unique))
            new = [r for seq, r in sorted(unique.items()) if seq not in stored]
            accepted = self._insert_reports(session, new)
            newest = max(accepted, key=lambda r: r.seq) if accepted else None
            params: dict[str, Any] = {"t_id": device_id, "t_last_seen": now}
            if newest is not None:
                state = state_values(newest)
                params |= {f"t_{name}": state[name] for name in STATE_COLUMNS}
                params |= {"t_newest": newest.seq, "t_agent_version": state.get("agent_version")}
            last_seq = session.scalar(touch_statement(newest is not None), params)
            _forget(session, device_id)
            return ReportsResult(len(accepted), len(reports) - len(accepted), int(last_seq or 0))

    def _active_and_stored(self, session: Session, device_id: str, seqs: list[int]) -> set[int]:
        """Which of ``seqs`` the device has stored; NotFoundError/StateError unless active.

        One query: the device row, outer-joined with its reports among the
        first chunk of ``seqs``.
        """
        params = {"device_id": device_id, "seqs": seqs[:_IN_CHUNK]}
        query = active_and_stored_statement()
        rows = session.execute(query, params).all()
        if not rows:
            raise NotFoundError(f"device {device_id} not found")
        if rows[0][0] is not None:
            raise StateError(f"device {device_id} was decommissioned")
        stored = {int(seq) for _, seq in rows if seq is not None}
        if len(seqs) > _IN_CHUNK:
            stored |= self._stored_seqs(session, device_id, seqs[_IN_CHUNK:])
        return stored

    @staticmethod
    def _stored_seqs(session: Session, device_id: str, seqs: list[int]) -> set[int]:
        stored: set[int] = set()
        for start in range(0, len(seqs), _IN_CHUNK):
            query = select(col(DeviceReportRow.seq)).where(
                col(DeviceReportRow.device_id) == device_id,
                col(DeviceReportRow.seq).in_(seqs[start : start + _IN_CHUNK]),
            )
            stored.update(int(s) for s in session.scalars(query))
        return stored

    @staticmethod
    def _insert_reports(
        session: Session, reports: list[DeviceReportRecord]
    ) -> list[DeviceReportRecord]:
        """Insert what no concurrent writer stored first; return the reports inserted."""
        if not reports:
            return []
        try:
            with session.begin_nested():
                rows = [report_values(r) for r in reports]
                session.execute(insert_reports_statement(), rows)
        except IntegrityError:
            inserted = []
            for report in reports:
                try:
                    with session.begin_nested():
                        session.add(to_row(DeviceReportRow, report))
                except IntegrityError:
                    continue
                inserted.append(report)
            return inserted
        return reports

    def list_reports(self, device_id: str, *, limit: int = 20) -> list[DeviceReportRecord]:
        if limit < 1:
            raise InvalidInputError(f"limit must be at least 1, not {limit}")
        query = (
            select(DeviceReportRow)
            .where(col(DeviceReportRow.device_id) == device_id)
            .order_by(col(DeviceReportRow.seq).desc())
            .limit(limit)
        )
        return self._all(query, DeviceReportRecord)


__all__ = ["DeviceSql"]
