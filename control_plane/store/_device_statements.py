"""Prebuilt Core statements for the hot paths of :mod:`control_plane.store._device_sql`.

Theory of operation: a status report, an assignment and its sequence are
written for every device of every rollout, so these statements are built once
(:func:`functools.cache`) against the tables' Core columns, with bound
parameters, and reused: each execution then costs one compiled-cache lookup,
none of the ORM's per-statement work, and never loads a row as an ORM object
(callers expire any ORM copy of the row they update). Column types come from
the tables, so values are converted exactly as the ORM would convert them.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, Table, and_, bindparam, case, func, or_, select, update
from sqlalchemy import insert as sql_insert
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Row
from sqlalchemy.sql.dml import Insert, ReturningInsert, ReturningUpdate, Update

from control_plane.db.tables import DeviceAssignmentRow, DeviceReportRow, DeviceRow
from control_plane.errors import InvalidInputError
from control_plane.store._rows import R
from control_plane.store.records import DeviceReportRecord
from fleetcore.errors import EdgefleetError
from fleetcore.protocol import Installed, StatusReport


def state_values(report: DeviceReportRecord) -> dict[str, Any]:
    """The device columns a report sets when it is the newest one."""
    try:
        status = StatusReport.from_dict(report.report)
    except EdgefleetError as exc:
        raise InvalidInputError(f"report {report.seq} of {report.device_id}: {exc}") from exc
    values: dict[str, Any] = {
        "state": report.state,
        "state_at": report.time,
        "state_sequence": status.assignment_sequence,
        "last_reason": status.reason,
        "last_message": status.message,
        "last_seq": report.seq,
    }
    releases: tuple[tuple[str, Installed | None], ...] = (
        ("target", status.target),
        ("current", status.active),
        ("previous", status.previous),
    )
    for prefix, installed in releases:
        values[f"{prefix}_model"] = None if installed is None else installed.model
        values[f"{prefix}_release"] = None if installed is None else installed.release
        values[f"{prefix}_sha256"] = None if installed is None else installed.sha256
    if status.agent_version is not None:
        values["agent_version"] = status.agent_version
    return values


def report_values(report: DeviceReportRecord) -> dict[str, Any]:
    """A report as the parameters of :func:`insert_reports_statement`."""
    return {
        "device_id": report.device_id,
        "seq": report.seq,
        "state": report.state,
        "time": report.time,
        "received_at": report.received_at,
        "transport": report.transport,
        "report": copy.deepcopy(report.report),
    }


#: Device columns the newest report sets (:func:`state_values`; ``agent_version`` aside).
STATE_COLUMNS = (
    "state",
    "state_at",
    "state_sequence",
    "last_reason",
    "last_message",
    "last_seq",
    *(
        f"{p}_{f}"
        for p in ("target", "current", "previous")
        for f in ("model", "release", "sha256")
    ),
)


def table(row_type: type[Any]) -> Table:
    """The Core table of a row class: Core statements skip the ORM's per-statement work."""
    return cast("Table", sa_inspect(row_type).local_table)


@functools.cache
def touch_statement(with_state: bool) -> ReturningUpdate[Any]:
    """One UPDATE of a device after a batch of its reports, returning its ``last_seq``.

    Parameters: ``t_id``, ``t_last_seen``; with ``with_state`` also ``t_newest``
    (the newest stored report's seq) and ``t_<column>`` for every state column
    and ``agent_version`` (NULL keeps it). ``last_seen`` moves forward to ``t_last_seen``;
    if ``t_newest`` is above the stored ``last_seq``, the state columns are
    replaced. Each column is a ``CASE`` on the row's old values, so this is the
    conditional UPDATE of :mod:`._device_sql`'s invariant, and its one row lock
    orders racing batches. Built once (Core, bound parameters), so each use costs
    one cached statement.
    """
    devices = table(DeviceRow)
    c = devices.c

    def param(name: str) -> Any:
        return bindparam(f"t_{name}", type_=c[name].type)

    seen = or_(c.last_seen.is_(None), c.last_seen < param("last_seen"))
    values: dict[str, Any] = {"last_seen": case((seen, param("last_seen")), else_=c.last_seen)}
    if with_state:
        newer = c.last_seq < bindparam("t_newest", type_=c.last_seq.type)
        for name in STATE_COLUMNS:
            values[name] = case((newer, param(name)), else_=c[name])
        agent = func.coalesce(param("agent_version"), c.agent_version)
        values["agent_version"] = case((newer, agent), else_=c.agent_version)
    return (
        update(devices)
        .where(c.id == bindparam("t_id", type_=c.id.type))
        .values(values)
        .returning(c.last_seq)
    )


@functools.cache
def allocate_statement(expect: bool) -> ReturningUpdate[Any]:
    """Take a device's next assignment sequence (``a_id``; ``a_expect``: only from that one)."""
    devices = table(DeviceRow)
    c = devices.c
    conditions = [c.id == bindparam("a_id", type_=c.id.type), c.decommissioned_at.is_(None)]
    if expect:
        conditions.append(
            c.desired_sequence == bindparam("a_expect", type_=c.desired_sequence.type)
        )
    return (
        update(devices)
        .where(*conditions)
        .values(desired_sequence=c.desired_sequence + 1)
        .returning(c.desired_sequence)
    )


@functools.cache
def device_exists_statement() -> Select[tuple[str]]:
    c = table(DeviceRow).c
    return select(c.id).where(c.id == bindparam("e_id", type_=c.id.type))


@functools.cache
def insert_assignment_statement() -> ReturningInsert[Any]:
    assignments = table(DeviceAssignmentRow)
    return sql_insert(assignments).returning(assignments.c.id)


@functools.cache
def insert_reports_statement() -> Insert:
    """Insert status reports (``executemany`` with :func:`report_values` rows)."""
    return sql_insert(table(DeviceReportRow))


@functools.cache
def latest_assignment_statement() -> Select[Any]:
    """The device's (``device_id``) assignment at its desired sequence, if it is active."""
    a, d = table(DeviceAssignmentRow), table(DeviceRow)
    newest = and_(a.c.device_id == d.c.id, a.c.sequence == d.c.desired_sequence)
    return (
        select(a)
        .join(d, newest)
        .where(d.c.id == bindparam("device_id", type_=d.c.id.type), d.c.decommissioned_at.is_(None))
    )


@functools.cache
def mark_published_statement() -> Update:
    """Record the broker's acknowledgement (``p_id``, ``p_sequence``, ``p_now``), once."""
    c = table(DeviceAssignmentRow).c
    return (
        update(table(DeviceAssignmentRow))
        .where(
            c.device_id == bindparam("p_id", type_=c.device_id.type),
            c.sequence == bindparam("p_sequence", type_=c.sequence.type),
            c.published_at.is_(None),
        )
        .values(published_at=bindparam("p_now", type_=c.published_at.type))
    )


def records(rows: Iterable[Row[Any]], record_type: type[R]) -> list[R]:
    """Records from Core rows: the row's columns by name (fresh values: no copies needed)."""
    names = [f.name for f in dataclasses.fields(record_type)]
    return [record_type(**{n: row._mapping[n] for n in names}) for row in rows]


@functools.cache
def active_and_stored_statement() -> Select[tuple[datetime | None, int | None]]:
    """The device's ``decommissioned_at``, outer-joined with its reports among ``seqs``."""
    devices, reports = table(DeviceRow), table(DeviceReportRow)
    device, report = devices.c, reports.c
    joined = and_(report.device_id == device.id, report.seq.in_(bindparam("seqs", expanding=True)))
    return (
        select(device.decommissioned_at, report.seq)
        .select_from(devices.outerjoin(reports, joined))
        .where(device.id == bindparam("device_id"))
    )


__all__ = [
    "STATE_COLUMNS",
    "active_and_stored_statement",
    "allocate_statement",
    "device_exists_statement",
    "insert_assignment_statement",
    "insert_reports_statement",
    "latest_assignment_statement",
    "mark_published_statement",
    "records",
    "report_values",
    "state_values",
    "table",
    "touch_statement",
]
