"""The TelemetryStore contract (SQLite and PostgreSQL): windows, rollups, captures, gauges.

Each test states one promise of :class:`control_plane.store.telemetry_port.TelemetryStore`:
a window is stored once per ``(device, seq)`` whoever sends it how often; a
roll-up pass moves windows without losing or double counting any, all or
nothing; queries read raw windows and rollups alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine

from control_plane.errors import InvalidInputError, NotFoundError
from control_plane.store import (
    CaptureRecord,
    DriftWindow,
    DriftWindowRecord,
    Store,
    TelemetryWindowRecord,
)
from control_plane.store.telemetry_records import DAY_S, HOUR_S
from fleetcore import canonical
from fleetcore.telemetry import LATENCY_BUCKETS
from tests.contract.test_device_store import device, device_id
from tests.contract.test_rollout_store import rollout, target
from tests.contract.test_store import (
    add_version,
    artifact,
    count_rows,
    in_threads,
    release_record,
    sha,
)

#: Midnight, so hour and day buckets are easy to reason about.
DAY0 = datetime(2025, 3, 1, tzinfo=timezone.utc)
REF = sha("reference")
OTHER_REF = sha("other reference")


def when(minutes: float) -> datetime:
    return DAY0 + timedelta(minutes=minutes)


def telemetry(n: int, seq: int, minutes: float = 0, **fields: Any) -> TelemetryWindowRecord:
    values: dict[str, Any] = {
        "device_id": device_id(n),
        "seq": seq,
        "time": when(minutes + 1),
        "window_start": when(minutes),
        "window_s": 60,
        "model": "sensor",
        "release": 2,
        "inferences": 10,
        "errors": 1,
        "input_errors": 2,
        "latency": canonical.encode({"3": 4, "40": 6}).decode(),
        "cpu_percent": 12.5,
        "rss_bytes": 1000 + seq,
        "disk_free_bytes": 5000 - seq,
        "received_at": when(minutes + 2),
    }
    values.update(fields)
    return TelemetryWindowRecord(**values)


def drift(n: int, seq: int, minutes: float = 0, **fields: Any) -> DriftWindowRecord:
    values: dict[str, Any] = {
        "device_id": device_id(n),
        "seq": seq,
        "model": "sensor",
        "release": 2,
        "reference": REF,
        "window_start": when(minutes),
        "window_s": 60,
        "samples": 100,
        "payload": b"EFDS\x00\xff" + f"{n}:{seq}".encode(),
        "received_at": when(minutes + 2),
    }
    values.update(fields)
    return DriftWindowRecord(**values)


def concat(windows: Sequence[DriftWindow], start: int, length: int) -> bytes:
    """A stand-in merge: the store must hand over one group, whatever the format."""
    assert len({(w.device_id, w.model, w.release, w.reference) for w in windows}) == 1
    return b"|".join(sorted(w.payload for w in windows))


def with_devices(store: Store, *numbers: int) -> None:
    for n in numbers:
        store.add_device(device(n))


# -- batches ------------------------------------------------------------------------------


def test_a_telemetry_batch_stores_each_device_and_seq_once(store: Store) -> None:
    first = store.add_telemetry_windows([telemetry(1, 1), telemetry(1, 2), telemetry(1, 1)])
    assert (first.stored, first.duplicates) == (2, 1)
    again = store.add_telemetry_windows([telemetry(1, 2), telemetry(1, 3), telemetry(2, 1)])
    assert (again.stored, again.duplicates) == (2, 1)
    totals = store.telemetry_by_release("sensor", since=DAY0)
    assert totals[2].windows == 4
    assert totals[2].devices == 2


def test_a_drift_batch_keeps_the_payload_bytes_exactly(store: Store) -> None:
    records = [drift(1, seq, minutes=seq) for seq in (1, 2, 3)]
    result = store.add_drift_windows([*records, records[0]])
    assert (result.stored, result.duplicates) == (3, 1)
    assert store.add_drift_windows(records).duplicates == 3
    found = store.drift_windows("sensor")
    assert [w.payload for w in found] == [r.payload for r in records]
    assert all(w.window_start.utcoffset() == timedelta(0) for w in found)
    assert found[0] == DriftWindow(
        device_id=device_id(1),
        model="sensor",
        release=2,
        reference=REF,
        window_start=when(1),
        window_s=60,
        samples=100,
        windows=1,
        payload=records[0].payload,
    )


def test_an_empty_batch_writes_nothing(store: Store) -> None:
    assert store.add_telemetry_windows([]).stored == 0
    assert store.add_drift_windows([]).stored == 0


def test_racing_writers_store_each_window_once(store: Store, engine: Engine) -> None:
    batches = [[drift(n % 3, seq) for n in range(3) for seq in range(1, 40)] for _ in range(4)]
    results = in_threads(4, lambda i: store.add_drift_windows(batches[i]))
    stored = [r.stored for r in results if not isinstance(r, Exception)]
    assert len(stored) == 4, results
    assert sum(stored) == 3 * 39
    assert count_rows(engine, "drift_window") == 3 * 39


def test_batches_inside_one_transaction_count_separately(store: Store) -> None:
    with store.transaction() as tx:
        assert tx.add_drift_windows([drift(1, 1), drift(1, 2)]).stored == 2
        assert tx.add_drift_windows([drift(1, 2), drift(1, 3)]).stored == 1
    assert len(store.drift_windows("sensor")) == 3


def test_a_failed_transaction_leaves_no_windows(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.add_telemetry_windows([telemetry(1, 1)])
        raise RuntimeError("crash")
    assert store.telemetry_by_release("sensor", since=DAY0) == {}


def test_a_value_a_column_cannot_hold_is_invalid_input(store: Store) -> None:
    with pytest.raises(InvalidInputError):
        store.add_drift_windows([drift(1, 1), drift(1, 2, samples=2**64)])
    assert store.drift_windows("sensor") == []


# -- queries ---------------------------------------------------------------------------------


def test_drift_windows_filter_by_release_devices_and_time(store: Store) -> None:
    store.add_drift_windows(
        [
            drift(1, 1, 0),
            drift(1, 2, 60, release=3),
            drift(2, 1, 120),
            drift(3, 1, 180, model="other"),
        ]
    )
    assert [w.window_start for w in store.drift_windows("sensor")] == [when(0), when(60), when(120)]
    assert len(store.drift_windows("sensor", release=2)) == 2
    assert {w.device_id for w in store.drift_windows("sensor", devices=[device_id(2)])} == {
        device_id(2)
    }
    ranged = store.drift_windows("sensor", since=when(60), until=when(120))
    assert [w.window_start for w in ranged] == [when(60)]
    many = [device_id(n) for n in range(5000)]  # over the in-statement limit: filtered after
    assert len(store.drift_windows("sensor", devices=many)) == 3


def test_telemetry_by_release_sums_counts_and_latency_buckets(store: Store) -> None:
    store.add_telemetry_windows(
        [
            telemetry(1, 1, 0),
            telemetry(2, 1, 0, inferences=30, errors=0, latency='{"105":1}'),
            telemetry(1, 2, 1, release=3),
            telemetry(3, 1, 1, model=None, release=None),
            telemetry(1, 3, -10),  # before since
        ]
    )
    totals = store.telemetry_by_release("sensor", since=when(0))
    assert sorted(totals) == [2, 3]
    two = totals[2]
    assert (two.devices, two.windows, two.inferences, two.errors, two.input_errors) == (
        2,
        2,
        40,
        1,
        4,
    )
    expected = [0] * LATENCY_BUCKETS
    expected[3], expected[40], expected[105] = 4, 6, 1
    assert list(two.latency_buckets) == expected
    assert two.error_rate == pytest.approx(1 / 41)
    only = store.telemetry_by_release("sensor", since=when(0), devices=[device_id(2)])
    assert only[2].inferences == 30


# -- retention ---------------------------------------------------------------------------------


def _drift_fingerprint(store: Store) -> tuple[int, int]:
    found = store.drift_windows("sensor")
    return sum(w.samples for w in found), sum(w.windows for w in found)


def test_raw_windows_roll_into_hours_then_days_without_loss(store: Store, engine: Engine) -> None:
    raw = [telemetry(1, seq, minutes=seq * 20) for seq in range(1, 10)]  # hours 0 to 3
    store.add_telemetry_windows(raw)
    before = store.telemetry_by_release("sensor", since=DAY0)
    moved = store.roll_up_telemetry(before=when(120), into_s=HOUR_S, now=when(10_000))
    assert moved == 5  # windows starting at 20..100 minutes
    assert count_rows(engine, "telemetry_window") == 4
    assert count_rows(engine, "telemetry_rollup") == 2  # hours 0 and 1
    assert store.telemetry_by_release("sensor", since=DAY0) == before
    assert store.roll_up_telemetry(before=when(120), into_s=HOUR_S, now=when(10_000)) == 0
    store.roll_up_telemetry(before=when(24 * 60), into_s=HOUR_S, now=when(10_000))
    assert store.roll_up_telemetry(before=when(48 * 60), into_s=DAY_S, now=when(10_000)) == 4
    assert count_rows(engine, "telemetry_rollup") == 1
    after = store.telemetry_by_release("sensor", since=DAY0)
    assert after == before
    # A day rollup starts at midnight: a query from later that day no longer sees it.
    assert store.telemetry_by_release("sensor", since=when(1)) == {}


def test_a_late_window_merges_into_its_existing_rollup(store: Store, engine: Engine) -> None:
    store.add_telemetry_windows([telemetry(1, 1, 5)])
    store.roll_up_telemetry(before=when(60), into_s=HOUR_S, now=when(500))
    store.add_telemetry_windows([telemetry(1, 2, 10, rss_bytes=99_999, disk_free_bytes=7)])
    store.roll_up_telemetry(before=when(60), into_s=HOUR_S, now=when(500))
    assert count_rows(engine, "telemetry_rollup") == 1
    total = store.telemetry_by_release("sensor", since=DAY0)[2]
    assert (total.windows, total.inferences) == (2, 20)


def test_windows_without_a_model_roll_up_apart(store: Store, engine: Engine) -> None:
    store.add_telemetry_windows([telemetry(1, 1, 5), telemetry(1, 2, 6, model=None, release=None)])
    assert store.roll_up_telemetry(before=when(60), into_s=HOUR_S, now=when(500)) == 2
    assert count_rows(engine, "telemetry_rollup") == 2
    assert store.telemetry_by_release("sensor", since=DAY0)[2].windows == 1


def test_drift_rolls_up_per_reference_and_keeps_every_window(store: Store, engine: Engine) -> None:
    store.add_drift_windows(
        [
            drift(1, 1, 0),
            drift(1, 2, 1),
            drift(1, 3, 2, reference=OTHER_REF),
            drift(2, 1, 0),
            drift(1, 4, 65),
            drift(1, 5, 0, window_s=7200),  # coarser than an hour: keeps its length
        ]
    )
    before = _drift_fingerprint(store)
    moved = store.roll_up_drift(before=when(24 * 60), into_s=HOUR_S, now=when(5000), merge=concat)
    assert moved == 6
    assert count_rows(engine, "drift_window") == 0
    rolled = store.drift_windows("sensor")
    assert _drift_fingerprint(store) == before
    keys = sorted((w.device_id, w.reference, w.window_start, w.window_s) for w in rolled)
    assert keys == sorted(
        [
            (device_id(1), REF, when(0), HOUR_S),
            (device_id(1), OTHER_REF, when(0), HOUR_S),
            (device_id(2), REF, when(0), HOUR_S),
            (device_id(1), REF, when(60), HOUR_S),
            (device_id(1), REF, when(0), 7200),
        ]
    )
    first = next(w for w in rolled if w.windows == 2)
    assert first.payload == b"|".join(sorted([drift(1, 1).payload, drift(1, 2).payload]))
    store.roll_up_drift(before=when(24 * 60), into_s=DAY_S, now=when(5000), merge=concat)
    daily = store.drift_windows("sensor")
    assert {w.window_s for w in daily} == {DAY_S}
    assert _drift_fingerprint(store) == before


def test_a_failing_merge_leaves_everything_as_it_was(store: Store, engine: Engine) -> None:
    store.add_drift_windows([drift(1, 1, 0), drift(1, 2, 1)])

    def broken(windows: Sequence[DriftWindow], start: int, length: int) -> bytes:
        raise ValueError("shape mismatch")

    with pytest.raises(ValueError, match="shape"):
        store.roll_up_drift(before=when(60), into_s=HOUR_S, now=when(100), merge=broken)
    assert count_rows(engine, "drift_window") == 2
    assert count_rows(engine, "drift_rollup") == 0


def test_a_pass_takes_at_most_limit_windows(store: Store, engine: Engine) -> None:
    store.add_drift_windows([drift(1, seq, seq) for seq in range(1, 11)])
    assert (
        store.roll_up_drift(before=when(60), into_s=HOUR_S, now=when(100), merge=concat, limit=4)
        == 4
    )
    assert count_rows(engine, "drift_window") == 6
    while store.roll_up_drift(before=when(60), into_s=HOUR_S, now=when(100), merge=concat):
        pass
    assert [w.windows for w in store.drift_windows("sensor")] == [10]


def test_rollups_are_hourly_or_daily(store: Store) -> None:
    with pytest.raises(InvalidInputError):
        store.roll_up_telemetry(before=DAY0, into_s=600, now=DAY0)


# -- captures, references, devices, gauges ---------------------------------------------------------


def capture(n: int = 1, minutes: float = 0, **fields: Any) -> CaptureRecord:
    values: dict[str, Any] = {
        "device_id": device_id(n),
        "model": "sensor",
        "release": 2,
        "window_start": when(minutes),
        "rows": 50,
        "labelled": 10,
        "artifact_sha256": sha("capture"),
        "received_at": when(minutes + 1),
    }
    values.update(fields)
    return CaptureRecord(**values)


def test_a_capture_is_stored_once_per_device_model_and_window(store: Store) -> None:
    with_devices(store, 1)
    store.add_artifact(dataclasses.replace(artifact("capture"), kind="dataset"))
    stored, created = store.add_capture(capture())
    assert created and stored.id > 0
    again, created = store.add_capture(capture(rows=7))
    assert not created and again == stored
    store.add_capture(capture(minutes=60))
    listed = store.list_captures("sensor", since=when(30))
    assert [c.window_start for c in listed] == [when(60)]
    assert len(store.list_captures("sensor")) == 2
    assert store.list_captures("other") == []


def test_a_capture_of_an_unknown_device_or_artifact_is_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError, match="device"):
        store.add_capture(capture())
    with_devices(store, 1)
    with pytest.raises(NotFoundError, match="artifact"):
        store.add_capture(capture())


def test_the_drift_reference_of_a_release(store: Store) -> None:
    store.add_artifact(artifact("drift-ref"))
    with_ref = add_version(store, "sensor", "1.0.0", drift_reference_sha256=sha("drift-ref"))
    without = add_version(store, "sensor", "1.1.0")
    store.create_release(release_record(with_ref, 1))
    store.create_release(release_record(without, 2))
    assert store.drift_reference("sensor", 1) == sha("drift-ref")
    assert store.drift_reference("sensor", 2) is None
    with pytest.raises(NotFoundError):
        store.drift_reference("sensor", 3)


def test_active_devices_leave_out_unknown_and_decommissioned(store: Store) -> None:
    with_devices(store, 1, 2)
    store.decommission_device(device_id(2), when(0))
    assert store.active_device_ids([device_id(n) for n in (1, 2, 3)]) == {device_id(1)}


def test_rollout_gauges_count_phases_and_target_statuses(store: Store) -> None:
    with_devices(store, 1, 2)
    store.add_rollout(rollout(1), [target("ro-0000000001", 1), target("ro-0000000001", 2)])
    store.add_rollout(rollout(2, phase="completed"), [])
    assert store.count_rollouts_by_phase() == {"progressing": 1, "completed": 1}
    assert store.count_targets_by_status(["progressing"]) == {("sensor-1", "pending"): 2}
