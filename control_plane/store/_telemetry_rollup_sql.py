"""Retention of the SQL adapter: raw windows into hourly rollups, hourly into daily.

Theory of operation: one pass takes the oldest windows (up to ``limit``) that
start before the cut-off and are finer than the target resolution, groups them
by target key, merges each group with the target rollup row if there is one,
writes the rollups and deletes the windows it took, all in one transaction.
A window of length ``w`` goes to the bucket of length ``L = max(into_s, w)``
that holds its start (``floor(start / L) * L``), so a window already as coarse
as the target keeps its own length and every bucket start stays a multiple of
its length, as drift summary keys require.

Invariants:

* Crash safety: the merged rows and the deletions commit together, so a
  window is counted in exactly one place (raw, hourly or daily) at any
  committed moment.
* One pass at a time: on PostgreSQL a transaction-scoped advisory lock
  serialises replicas; on SQLite the write lock taken at BEGIN does.
* Telemetry rollups add counts and latency buckets, keep the highest CPU and
  memory and the lowest free disk. Drift rollups are merged by the caller's
  ``merge`` and never across reference digests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Row, Select, Table, delete, insert, select, text, update
from sqlalchemy.orm import Session

from control_plane.db.tables import (
    DriftRollupRow,
    DriftWindowRow,
    TelemetryRollupRow,
    TelemetryWindowRow,
)
from control_plane.errors import InvalidInputError
from control_plane.store._device_statements import table
from control_plane.store._sessions import SessionScope
from control_plane.store.telemetry_port import DriftMerge
from control_plane.store.telemetry_records import DAY_S, HOUR_S, DriftWindow
from fleetcore import canonical
from fleetcore.telemetry import LATENCY_BUCKETS

# Arbitrary, fixed key of the PostgreSQL advisory lock held during a pass.
_PG_ROLLUP_LOCK = 0x6566_726F_6C6C
_CHUNK = 500
Key = tuple[int, datetime, str, str, int]  # (window_s, window_start, device, model, release)
# A rollup row's key columns, in Key's order; drift rollups add the reference digest.
_KEY_COLUMNS = ("window_s", "window_start", "device_id", "model", "release", "reference")


def _bucket(start: datetime, window_s: int, into_s: int) -> tuple[int, datetime]:
    length = max(into_s, window_s)
    epoch = int(start.timestamp())
    return length, datetime.fromtimestamp(epoch - epoch % length, timezone.utc)


def _lock(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_ROLLUP_LOCK})


def _tables(into_s: int, window_row: type[Any], rollup_row: type[Any]) -> tuple[bool, Table, Table]:
    """``(raw, source, target)`` of a pass into ``into_s``: hourly reads raw windows."""
    if into_s not in (HOUR_S, DAY_S):
        raise InvalidInputError(f"rollups are hourly ({HOUR_S} s) or daily ({DAY_S} s)")
    raw = into_s == HOUR_S
    return raw, table(window_row if raw else rollup_row), table(rollup_row)


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _targets(
    session: Session, target: Any, keys: Iterable[tuple[Any, ...]], extra: str | None
) -> dict[tuple[Any, ...], Any]:
    """The stored rollup rows among ``keys``: ``{key (+ extra column): row}``."""
    keys = list(keys)
    c = target.c
    found: dict[Any, Any] = {}
    devices = sorted({k[2] for k in keys})
    starts = sorted({k[1] for k in keys})
    for chunk in _chunks(devices):
        query = select(target).where(c.device_id.in_(chunk), c.window_start.in_(starts))
        for row in session.execute(query):
            m = row._mapping
            key: tuple[Any, ...] = (m["window_s"], m["window_start"], m["device_id"], m["model"])
            key += (m["release"],) if extra is None else (m["release"], m[extra])
            found[key] = m
    return found


def _oldest(query: Select[Any], s: Any, before: datetime, into_s: int, limit: int) -> Select[Any]:
    """A pass's pick: windows starting before the cut-off, finer than ``into_s``, oldest first.

    Hourly passes read raw windows (all finer than an hour); daily passes read
    rollup rows, so those are filtered by length.
    """
    query = query.where(s.window_start < before)
    if into_s != HOUR_S:
        query = query.where(s.window_s < into_s)
    return query.order_by(s.window_start, s.id).limit(limit)


def _take(session: Session, query: Select[Any]) -> Sequence[Row[Any]]:
    """The picked rows, once this pass holds the rollup lock."""
    _lock(session)
    return session.execute(query).all()


def _write_rollup(
    session: Session, target: Any, old: Any, key: tuple[Any, ...], values: dict[str, Any]
) -> None:
    """Update the stored rollup row ``old``, or insert one for ``key`` (a ``Key``, + reference)."""
    if old is not None:
        session.execute(update(target).where(target.c.id == old["id"]).values(values))
        return
    session.execute(insert(target).values(**dict(zip(_KEY_COLUMNS, key, strict=False)), **values))


def _delete_taken(session: Session, source: Any, rows: Sequence[Row[Any]]) -> None:
    for chunk in _chunks([row.id for row in rows]):
        session.execute(delete(source).where(source.c.id.in_(chunk)))


class TelemetryRollupSql(SessionScope):
    """Roll-up passes of the SQL store (see the module docstring)."""

    def roll_up_telemetry(
        self, *, before: datetime, into_s: int, now: datetime, limit: int = 5000
    ) -> int:
        raw, source, target = _tables(into_s, TelemetryWindowRow, TelemetryRollupRow)
        s = source.c
        picked = [
            s.id,
            s.device_id,
            s.window_start,
            s.window_s,
            s.model,
            s.release,
            (s.cpu_percent if raw else s.cpu_percent_max).label("cpu"),
            (s.rss_bytes if raw else s.rss_bytes_max).label("rss"),
            (s.disk_free_bytes if raw else s.disk_free_bytes_min).label("disk"),
            s.inferences,
            s.errors,
            s.input_errors,
            s.latency,
        ]
        query = _oldest(select(*picked, *([] if raw else [s.windows])), s, before, into_s, limit)
        with self._write("telemetry rollup") as session:
            rows = _take(session, query)
            if not rows:
                return 0
            groups: dict[Key, dict[str, Any]] = {}
            for row in rows:
                m = row._mapping
                length, start = _bucket(m["window_start"], m["window_s"], into_s)
                key = (length, start, m["device_id"], m["model"] or "", m["release"] or 0)
                acc = groups.setdefault(key, _empty_telemetry())
                _add_telemetry(acc, m, 1 if raw else int(m["windows"]))
            stored = _targets(session, target, groups, None)
            for key, acc in groups.items():
                old = stored.get(key)
                if old is not None:
                    _add_telemetry(acc, old, int(old["windows"]))
                _write_rollup(session, target, old, key, _telemetry_values(acc, now))
            _delete_taken(session, source, rows)
            return len(rows)

    def roll_up_drift(
        self,
        *,
        before: datetime,
        into_s: int,
        now: datetime,
        merge: DriftMerge,
        limit: int = 2000,
    ) -> int:
        raw, source, target = _tables(into_s, DriftWindowRow, DriftRollupRow)
        s = source.c
        query = select(
            s.id,
            s.device_id,
            s.model,
            s.release,
            s.reference,
            s.window_start,
            s.window_s,
            s.samples,
            s.payload,
            *([] if raw else [s.windows]),
        )
        query = _oldest(query, s, before, into_s, limit)
        with self._write("drift rollup") as session:
            rows = _take(session, query)
            if not rows:
                return 0
            groups: dict[tuple[Any, ...], list[DriftWindow]] = {}
            for row in rows:
                m = row._mapping
                length, start = _bucket(m["window_start"], m["window_s"], into_s)
                key = (length, start, m["device_id"], m["model"], m["release"], m["reference"])
                groups.setdefault(key, []).append(_drift_window(m, 1 if raw else None))
            stored = _targets(session, target, [k[:5] for k in groups], "reference")
            for key, windows in groups.items():
                old = stored.get(key)
                if old is not None:
                    windows.append(_drift_window(old, None))
                window_s, start = key[0], key[1]
                values = {
                    "windows": sum(w.windows for w in windows),
                    "samples": sum(w.samples for w in windows),
                    "payload": merge(windows, int(start.timestamp()), window_s),
                    "updated_at": now,
                }
                _write_rollup(session, target, old, key, values)
            _delete_taken(session, source, rows)
            return len(rows)


def _drift_window(m: Any, windows: int | None) -> DriftWindow:
    return DriftWindow(
        device_id=m["device_id"],
        model=m["model"],
        release=int(m["release"]),
        reference=m["reference"],
        window_start=m["window_start"],
        window_s=int(m["window_s"]),
        samples=int(m["samples"]),
        windows=int(m["windows"]) if windows is None else windows,
        payload=bytes(m["payload"]),
    )


def _empty_telemetry() -> dict[str, Any]:
    return {
        "windows": 0,
        "inferences": 0,
        "errors": 0,
        "input_errors": 0,
        "latency": [0] * LATENCY_BUCKETS,
        "cpu": None,
        "rss": None,
        "disk": None,
    }


def _add_telemetry(acc: dict[str, Any], m: Any, windows: int) -> None:
    acc["windows"] += windows
    for name in ("inferences", "errors", "input_errors"):
        acc[name] += int(m[name])
    for key, count in json.loads(m["latency"]).items():
        acc["latency"][int(key)] += int(count)
    # A rollup row names its columns *_max / *_min; a source row was selected with labels.
    cpu = m["cpu"] if "cpu" in m else m["cpu_percent_max"]
    rss = m["rss"] if "rss" in m else m["rss_bytes_max"]
    disk = m["disk"] if "disk" in m else m["disk_free_bytes_min"]
    if cpu is not None:
        acc["cpu"] = cpu if acc["cpu"] is None else max(acc["cpu"], cpu)
    if rss is not None:
        acc["rss"] = rss if acc["rss"] is None else max(acc["rss"], rss)
    if disk is not None:
        acc["disk"] = disk if acc["disk"] is None else min(acc["disk"], disk)


def _telemetry_values(acc: dict[str, Any], now: datetime) -> dict[str, Any]:
    latency = {str(i): n for i, n in enumerate(acc["latency"]) if n}
    return {
        "windows": acc["windows"],
        "inferences": acc["inferences"],
        "errors": acc["errors"],
        "input_errors": acc["input_errors"],
        "latency": canonical.encode(latency).decode(),
        "cpu_percent_max": acc["cpu"],
        "rss_bytes_max": acc["rss"],
        "disk_free_bytes_min": acc["disk"],
        "updated_at": now,
    }


__all__ = ["TelemetryRollupSql"]
