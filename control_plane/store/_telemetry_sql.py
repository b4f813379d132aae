"""The telemetry half of the SQL adapter: raw windows, captures, queries and gauges.

Theory of operation: :class:`TelemetrySql` holds the
:class:`~control_plane.store.telemetry_port.TelemetryStore` methods;
:class:`~control_plane.store.sql.SqlStore` inherits them. Batches go through
:func:`~control_plane.store._telemetry_bulk.insert_new` (executemany on
SQLite, COPY through a staging table on PostgreSQL), so each ``(device_id,
seq)`` is stored once and a duplicate is counted, never raised. Retention
(the rollups) lives in :mod:`control_plane.store._telemetry_rollup_sql`.

Invariants:

* Queries read raw windows and rollups in one ``UNION ALL`` statement: one
  snapshot on PostgreSQL (each statement of a READ COMMITTED transaction has
  its own) and on SQLite (a WAL read transaction), so a roll-up committing
  meanwhile can neither hide a window nor show it twice.
* A device filter longer than :data:`_IN_LIMIT` is applied after reading,
  which keeps statements under every database's parameter limit.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import Select, func, literal, select, union_all
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from control_plane.db.tables import (
    ArtifactRow,
    CaptureRow,
    DeviceRow,
    DriftRollupRow,
    DriftWindowRow,
    ModelVersionRow,
    ReleaseRow,
    RolloutDeviceRow,
    RolloutRow,
    TelemetryRollupRow,
    TelemetryWindowRow,
)
from control_plane.errors import InvalidInputError, NotFoundError
from control_plane.store._device_statements import table
from control_plane.store._rows import require, to_record, to_row
from control_plane.store._telemetry_bulk import insert_new
from control_plane.store._telemetry_rollup_sql import TelemetryRollupSql
from control_plane.store.telemetry_records import (
    BatchResult,
    CaptureRecord,
    DriftWindow,
    DriftWindowRecord,
    TelemetryAggregate,
    TelemetryWindowRecord,
)
from fleetcore.telemetry import LATENCY_BUCKETS

_IN_LIMIT = 2000
_IN_CHUNK = 500
TELEMETRY_COLUMNS = (
    "device_id",
    "seq",
    "time",
    "window_start",
    "window_s",
    "model",
    "release",
    "inferences",
    "errors",
    "input_errors",
    "latency",
    "cpu_percent",
    "rss_bytes",
    "disk_free_bytes",
    "received_at",
)
DRIFT_COLUMNS = (
    "device_id",
    "seq",
    "model",
    "release",
    "reference",
    "window_start",
    "window_s",
    "samples",
    "payload",
    "received_at",
)
_KEY = ("device_id", "seq")


def _unique(records: Sequence[Any], columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """Rows of ``records`` in ``columns`` order, the first of each (device_id, seq)."""
    assert tuple(columns[:2]) == _KEY  # the key is the first two values of a row
    row = attrgetter(*columns)  # one C call per record
    seen: dict[tuple[str, int], tuple[Any, ...]] = {}
    for record in records:
        values = row(record)
        seen.setdefault(values[:2], values)
    return list(seen.values())


def _in_range(
    query: Select[Any], start: Any, since: datetime | None, until: datetime | None
) -> Any:
    if since is not None:
        query = query.where(start >= since)
    if until is not None:
        query = query.where(start < until)
    return query


def add_buckets(total: list[int], latency: str) -> None:
    """Add a stored sparse histogram (canonical JSON) to ``total`` in place."""
    for key, count in json.loads(latency).items():
        total[int(key)] += int(count)


class TelemetrySql(TelemetryRollupSql):
    """Telemetry, drift-summary and capture methods of the SQL store."""

    # -- ingestion ---------------------------------------------------------------------
    def add_telemetry_windows(self, records: Sequence[TelemetryWindowRecord]) -> BatchResult:
        rows = _unique(records, TELEMETRY_COLUMNS)
        with self._write("telemetry windows") as session:
            stored = insert_new(session, table(TelemetryWindowRow), TELEMETRY_COLUMNS, rows, _KEY)
        return BatchResult(stored, len(records) - stored)

    def add_drift_windows(self, records: Sequence[DriftWindowRecord]) -> BatchResult:
        rows = _unique(records, DRIFT_COLUMNS)
        with self._write("drift summaries") as session:
            stored = insert_new(session, table(DriftWindowRow), DRIFT_COLUMNS, rows, _KEY)
        return BatchResult(stored, len(records) - stored)

    def active_device_ids(self, device_ids: Collection[str]) -> set[str]:
        ids = sorted(set(device_ids))
        found: set[str] = set()
        c = table(DeviceRow).c
        with self._read() as session:
            for start in range(0, len(ids), _IN_CHUNK):
                query = select(c.id).where(
                    c.id.in_(ids[start : start + _IN_CHUNK]), c.decommissioned_at.is_(None)
                )
                found.update(str(i) for i in session.scalars(query))
        return found

    def drift_reference(self, model: str, release: int) -> str | None:
        query = (
            select(col(ModelVersionRow.drift_reference_sha256))
            .join(ReleaseRow, col(ReleaseRow.version_id) == col(ModelVersionRow.id))
            .where(col(ReleaseRow.model) == model, col(ReleaseRow.counter) == release)
        )
        with self._read() as session:
            found = session.execute(query).one_or_none()
        if found is None:
            raise NotFoundError(f"release {model} #{release} not found")
        return None if found[0] is None else str(found[0])

    # -- captures ----------------------------------------------------------------------
    def add_capture(self, record: CaptureRecord) -> tuple[CaptureRecord, bool]:
        query = select(CaptureRow).where(
            col(CaptureRow.device_id) == record.device_id,
            col(CaptureRow.model) == record.model,
            col(CaptureRow.window_start) == record.window_start,
        )
        what = f"capture of {record.device_id} for {record.model}"
        with self._write(what) as session:
            found = session.scalars(query).one_or_none()
            if found is not None:
                return to_record(CaptureRecord, found), False
            require(session, DeviceRow, record.device_id, f"device {record.device_id}")
            require(session, ArtifactRow, record.artifact_sha256, "the capture's artifact")
            try:
                with session.begin_nested():
                    row = to_row(CaptureRow, record)
                    session.add(row)
                    session.flush()
            except IntegrityError:  # a concurrent upload of the same window won
                winner = session.scalars(query.execution_options(populate_existing=True)).one()
                return to_record(CaptureRecord, winner), False
            return to_record(CaptureRecord, row), True

    def list_captures(
        self,
        model: str,
        *,
        since: datetime | None = None,
        device_id: str | None = None,
        limit: int = 1000,
    ) -> list[CaptureRecord]:
        if limit < 1:
            raise InvalidInputError(f"limit must be at least 1, not {limit}")
        query = (
            select(CaptureRow)
            .where(col(CaptureRow.model) == model)
            .order_by(col(CaptureRow.window_start), col(CaptureRow.device_id))
            .limit(limit)
        )
        if since is not None:
            query = query.where(col(CaptureRow.window_start) >= since)
        if device_id is not None:
            query = query.where(col(CaptureRow.device_id) == device_id)
        return self._all(query, CaptureRecord)

    # -- queries -------------------------------------------------------------------------
    def drift_windows(
        self,
        model: str,
        *,
        release: int | None = None,
        devices: Collection[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[DriftWindow]:
        wanted = None if devices is None else set(devices)
        in_sql = wanted is not None and len(wanted) <= _IN_LIMIT
        parts = []
        for source, windows in (
            (table(DriftWindowRow), literal(1)),
            (table(DriftRollupRow), table(DriftRollupRow).c.windows),
        ):
            c = source.c
            part = select(
                c.device_id,
                c.model,
                c.release,
                c.reference,
                c.window_start,
                c.window_s,
                c.samples,
                windows.label("windows"),
                c.payload,
            ).where(c.model == model)
            if release is not None:
                part = part.where(c.release == release)
            if in_sql:
                assert wanted is not None
                part = part.where(c.device_id.in_(sorted(wanted)))
            parts.append(_in_range(part, c.window_start, since, until))
        both = union_all(*parts).subquery()
        query = select(both).order_by(both.c.window_start, both.c.device_id, both.c.window_s)
        with self._read() as session:
            found = [DriftWindow(**row._mapping) for row in session.execute(query)]
        if wanted is not None and not in_sql:
            found = [w for w in found if w.device_id in wanted]
        return found

    def telemetry_by_release(
        self,
        model: str,
        *,
        since: datetime,
        until: datetime | None = None,
        devices: Collection[str] | None = None,
    ) -> dict[int, TelemetryAggregate]:
        wanted = None if devices is None else set(devices)
        in_sql = wanted is not None and len(wanted) <= _IN_LIMIT
        parts = []
        for source, windows in (
            (table(TelemetryWindowRow), literal(1)),
            (table(TelemetryRollupRow), table(TelemetryRollupRow).c.windows),
        ):
            c = source.c
            part = select(
                c.release,
                c.device_id,
                windows.label("windows"),
                c.inferences,
                c.errors,
                c.input_errors,
                c.latency,
            ).where(c.model == model, c.release.is_not(None))
            if in_sql:
                assert wanted is not None
                part = part.where(c.device_id.in_(sorted(wanted)))
            parts.append(_in_range(part, c.window_start, since, until))
        totals: dict[int, list[Any]] = {}
        with self._read() as session:
            for (
                release,
                device,
                windows_n,
                inferences,
                errors,
                input_errors,
                latency,
            ) in session.execute(union_all(*parts)):
                if wanted is not None and not in_sql and device not in wanted:
                    continue
                entry = totals.setdefault(int(release), [set(), 0, 0, 0, 0, [0] * LATENCY_BUCKETS])
                entry[0].add(device)
                entry[1] += int(windows_n)
                entry[2] += int(inferences)
                entry[3] += int(errors)
                entry[4] += int(input_errors)
                add_buckets(entry[5], latency)
        return {
            release: TelemetryAggregate(
                model=model,
                release=release,
                devices=len(e[0]),
                windows=e[1],
                inferences=e[2],
                errors=e[3],
                input_errors=e[4],
                latency_buckets=tuple(e[5]),
            )
            for release, e in sorted(totals.items())
        }

    # -- gauges ----------------------------------------------------------------------------
    def count_rollouts_by_phase(self) -> dict[str, int]:
        query = select(col(RolloutRow.phase), func.count()).group_by(col(RolloutRow.phase))
        with self._read() as session:
            return {str(phase): int(n) for phase, n in session.execute(query)}

    def count_targets_by_status(self, phases: Collection[str]) -> dict[tuple[str, str], int]:
        query = (
            select(col(RolloutRow.name), col(RolloutDeviceRow.status), func.count())
            .join(RolloutRow, col(RolloutRow.id) == col(RolloutDeviceRow.rollout_id))
            .where(col(RolloutRow.phase).in_(list(phases)))
            .group_by(col(RolloutRow.name), col(RolloutDeviceRow.status))
        )
        with self._read() as session:
            return {
                (str(name), str(getattr(status, "value", status))): int(n)
                for name, status, n in session.execute(query)
            }


__all__ = ["DRIFT_COLUMNS", "TELEMETRY_COLUMNS", "TelemetrySql", "add_buckets"]
