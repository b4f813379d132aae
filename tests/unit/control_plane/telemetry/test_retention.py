"""Retention with a movable clock: raw windows become hours, then days, and merge exactly."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from control_plane.config import TelemetrySettings
from control_plane.store.telemetry_records import DAY_S, HOUR_S
from control_plane.telemetry.rollup import Retention, merge_encoded
from fleetcore.drift.encoding import decode
from fleetcore.drift.summary import DriftCounts, merge_all
from fleetcore.protocol import Channel
from tests.contract.test_device_store import device_id
from tests.unit.control_plane.telemetry.support import (
    MODEL,
    T0,
    Stocked,
    drift_bytes,
    stocked_store,
    summary,
    telemetry,
)
from tests.unit.control_plane.telemetry.test_ingest import Clock, ingests, msg


def same_counts(a: DriftCounts, b: DriftCounts) -> None:
    for name in ("counts", "nan", "inf", "class_counts", "histograms", "labelled", "correct"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    # Moments travel with float32 ratios and rounded bounds; n, mean and M2 stay close.
    assert np.allclose(a.moments[:, :3], b.moments[:, :3], rtol=1e-5, atol=1e-6)


def rows(stocked: Stocked, table: str) -> int:
    engine = stocked.store._engine  # type: ignore[attr-defined]
    with engine.connect() as connection:
        return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_merge_encoded_is_the_exact_merge_under_the_rollup_key(tmp_path: Path) -> None:
    from control_plane.store import DriftWindow

    parts = [summary(1, seq) for seq in (1, 2, 3)]
    windows = [
        DriftWindow(
            device_id=device_id(1),
            model=MODEL,
            release=1,
            reference=p.key.reference,
            window_start=T0,
            window_s=60,
            samples=p.body.n,
            windows=1,
            payload=drift_bytes(1, p.key.seq),
        )
        for p in parts
    ]
    start = int(T0.timestamp())
    merged = decode(merge_encoded(windows, start, HOUR_S))
    assert (merged.key.start, merged.key.length, merged.key.seq) == (start, HOUR_S, 3)
    same_counts(merged.body, merge_all(decode(w.payload).body for w in windows))
    assert merged.body.n == sum(p.body.n for p in parts)


def test_retention_moves_windows_by_age_and_keeps_the_merge(tmp_path: Path) -> None:
    stocked = stocked_store(tmp_path)
    reports, _ = ingests(stocked, CollectorRegistry())
    # Device 1: 90 one-minute windows from T0 (1.5 hours); device 2: 10 windows.
    batch = [msg(1, Channel.DRIFT, drift_bytes(1, seq)) for seq in range(1, 91)]
    batch += [msg(2, Channel.DRIFT, drift_bytes(2, seq)) for seq in range(1, 11)]
    batch += [msg(1, Channel.TELEMETRY, telemetry(1, seq).encode()) for seq in range(1, 91)]
    reports.mqtt(batch)
    store = stocked.store
    raw = store.drift_windows(MODEL)
    expected = merge_all(decode(w.payload).body for w in raw)
    health = store.telemetry_by_release(MODEL, since=T0)

    clock = Clock()
    settings = TelemetrySettings(raw_retention_days=7, hourly_retention_days=90)
    retention = Retention(store, settings, clock)
    clock.now = T0 + timedelta(days=6)
    assert retention.run().moved == 0  # nothing old enough yet

    clock.now = T0 + timedelta(days=7, hours=3)
    result = retention.run()
    assert (result.drift_to_hourly, result.telemetry_to_hourly) == (100, 90)
    assert rows(stocked, "drift_window") == rows(stocked, "telemetry_window") == 0
    hourly = store.drift_windows(MODEL)
    assert [(w.device_id, w.window_start, w.window_s, w.windows) for w in hourly] == [
        (device_id(1), T0, HOUR_S, 60),
        (device_id(2), T0, HOUR_S, 10),
        (device_id(1), T0 + timedelta(hours=1), HOUR_S, 30),
    ]
    same_counts(merge_all(decode(w.payload).body for w in hourly), expected)
    assert store.telemetry_by_release(MODEL, since=T0) == health
    assert retention.run().moved == 0  # idempotent

    clock.now = T0 + timedelta(days=91)
    result = retention.run()
    assert (result.drift_to_daily, result.telemetry_to_daily) == (len(hourly), 2)
    daily = store.drift_windows(MODEL)
    assert {w.window_s for w in daily} == {DAY_S}
    assert {w.window_start for w in daily} == {T0}
    assert sum(w.windows for w in daily) == 100
    same_counts(merge_all(decode(w.payload).body for w in daily), expected)
    assert store.telemetry_by_release(MODEL, since=T0) == health


def test_a_late_window_joins_its_rolled_hour(tmp_path: Path) -> None:
    stocked = stocked_store(tmp_path)
    reports, _ = ingests(stocked, CollectorRegistry())
    reports.mqtt([msg(1, Channel.DRIFT, drift_bytes(1, 1))])
    clock = Clock()
    retention = Retention(stocked.store, TelemetrySettings(), clock)
    clock.now = T0 + timedelta(days=8)
    retention.run()
    # Sent long ago, delivered only now: the ingest accepts it, the next pass merges it.
    reports.mqtt([msg(1, Channel.DRIFT, drift_bytes(1, 2))])
    retention.run()
    [hour] = stocked.store.drift_windows(MODEL)
    assert hour.windows == 2
    assert decode(hour.payload).key.seq == 2
