"""The rollout health gate's evidence from telemetry sums: error counts and p95 latency."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

import pytest

from control_plane.drift.health import TelemetryHealthSource
from control_plane.rollouts.gates import HealthEvidence
from control_plane.store import Store
from control_plane.store.telemetry_records import TelemetryAggregate
from fleetcore.telemetry import LATENCY_BUCKET_BOUNDS_NS, LATENCY_BUCKETS
from tests.unit.control_plane.drift.support import MODEL, T0, Clock

NOW = T0 + timedelta(hours=3)
WAVE_OPENED = T0 + timedelta(hours=2)
WAVE = ["dev-0001", "dev-0002"]


def _latency(index: int, count: int) -> tuple[int, ...]:
    buckets = [0] * LATENCY_BUCKETS
    buckets[index] = count
    return tuple(buckets)


def _middle_ms(index: int) -> float:
    bounds = LATENCY_BUCKET_BOUNDS_NS
    return math.sqrt(bounds[index - 1] * bounds[index]) / 1e6


@dataclass
class _Row:
    release: int
    start: datetime
    inferences: int
    errors: int
    latency_index: int


@dataclass
class FakeTelemetry:
    """``telemetry_by_release`` over a few stored rows (every row is one window of one device)."""

    rows: list[_Row] = field(default_factory=list)
    calls: list[tuple[datetime, list[str] | None]] = field(default_factory=list)

    def telemetry_by_release(
        self,
        model: str,
        *,
        since: datetime,
        until: datetime | None = None,
        devices: Collection[str] | None = None,
    ) -> dict[int, TelemetryAggregate]:
        assert model == MODEL
        self.calls.append((since, None if devices is None else list(devices)))
        out: dict[int, TelemetryAggregate] = {}
        for row in self.rows:
            if row.start < since:
                continue
            had = out.get(row.release)
            buckets = list(had.latency_buckets) if had else [0] * LATENCY_BUCKETS
            buckets[row.latency_index] += row.inferences
            out[row.release] = TelemetryAggregate(
                model=model,
                release=row.release,
                devices=1,
                windows=(had.windows if had else 0) + 1,
                inferences=(had.inferences if had else 0) + row.inferences,
                errors=(had.errors if had else 0) + row.errors,
                input_errors=0,
                latency_buckets=tuple(buckets),
            )
        return out


def _source(store: FakeTelemetry) -> TelemetryHealthSource:
    return TelemetryHealthSource(cast(Store, store), Clock(NOW), lookback=timedelta(hours=6))


def test_no_telemetry_on_the_candidate_is_no_evidence() -> None:
    store = FakeTelemetry([_Row(1, T0, 500, 0, 40)])
    assert _source(store).measure(MODEL, 2, WAVE, WAVE_OPENED) is None
    assert store.calls == [(WAVE_OPENED, WAVE)]


def test_candidate_counts_and_p95_against_the_previous_release() -> None:
    store = FakeTelemetry(
        [
            _Row(1, T0, 900, 3, 40),  # what the wave's devices ran before
            _Row(3, T0, 50, 0, 90),  # another, rarely used release: not the baseline
            _Row(2, WAVE_OPENED, 380, 20, 44),
            _Row(2, WAVE_OPENED + timedelta(minutes=5), 20, 0, 60),
        ]
    )
    evidence = _source(store).measure(MODEL, 2, WAVE, WAVE_OPENED)
    assert evidence is not None
    assert (evidence.inferences, evidence.errors) == (420, 20)  # attempted: served plus failed
    assert evidence.p95_latency_ms == pytest.approx(_middle_ms(44))
    assert evidence.previous_p95_latency_ms == pytest.approx(_middle_ms(40))
    # The wave's devices only, since the wave opened; the baseline over the look-back.
    assert store.calls == [(WAVE_OPENED, WAVE), (NOW - timedelta(hours=6), WAVE)]


def test_candidate_that_only_failed_has_no_p95_and_no_baseline_is_none() -> None:
    store = FakeTelemetry([_Row(2, WAVE_OPENED, 0, 12, 0), _Row(1, T0, 0, 4, 0)])
    evidence = _source(store).measure(MODEL, 2, WAVE, WAVE_OPENED)
    assert evidence == HealthEvidence(
        inferences=12, errors=12, p95_latency_ms=None, previous_p95_latency_ms=None
    )


def test_a_baseline_older_than_the_look_back_is_ignored() -> None:
    store = FakeTelemetry(
        [_Row(1, NOW - timedelta(hours=7), 900, 0, 30), _Row(2, WAVE_OPENED, 100, 0, 30)]
    )
    evidence = _source(store).measure(MODEL, 2, WAVE, WAVE_OPENED)
    assert evidence is not None and evidence.previous_p95_latency_ms is None
    assert evidence.p95_latency_ms == pytest.approx(_middle_ms(30))
