"""The rollout quality gate's evidence: a candidate's outputs against the previous release's."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import cast

import numpy as np

from control_plane.drift.analysis import Window
from control_plane.drift.quality import DriftQualitySource
from control_plane.drift.service import DriftService
from control_plane.rollouts.gates import Outcome
from fleetcore.drift import DriftAccumulator, DriftReference, build_reference
from tests.unit.control_plane.drift.support import (
    MODEL,
    REFERENCE,
    START,
    T0,
    Clock,
    device,
    device_windows,
)

NOW = T0 + timedelta(hours=1)
WAVE = [device(i) for i in range(4)]


@dataclass
class FakeDrift:
    """The two things the quality source asks the drift service for."""

    stored: list[Window] = field(default_factory=list)
    references: dict[int, DriftReference] = field(default_factory=dict)
    asked_since: list[datetime] = field(default_factory=list)

    def windows(
        self, model: str, *, release: int | None, since: datetime, until: datetime | None = None
    ) -> list[Window]:
        assert model == MODEL and release is None
        self.asked_since.append(since)
        first = since.timestamp()
        return [w for w in self.stored if w.start >= first]

    def reference(self, model: str, release: int) -> DriftReference | None:
        return self.references.get(release)


def _source(drift: FakeDrift, min_samples: int = 500) -> DriftQualitySource:
    return DriftQualitySource(
        cast(DriftService, drift), Clock(NOW), min_samples=min_samples, lookback=timedelta(hours=2)
    )


def _release(counter: int, *, seed: int, rotate: int = 0, per_window: int = 120,
             devices: list[str] = WAVE, first: int = 0) -> list[Window]:  # fmt: skip
    return [
        w
        for i, name in enumerate(devices)
        for w in device_windows(
            REFERENCE, name, 3, per_window, seed=seed + i, release=counter, rotate=rotate,
            first=first,
        )
    ]  # fmt: skip


def test_same_outputs_as_the_previous_release_on_the_same_devices_pass() -> None:
    drift = FakeDrift(_release(1, seed=10) + _release(2, seed=20, first=3))
    result = _source(drift).evaluate("r1", MODEL, 2, WAVE)
    assert result.gate == "quality"
    assert result.outcome is Outcome.PASS, result.detail
    assert result.detail == "outputs of release 2 match release 1 on the same devices"
    assert result.values["samples"] == 4 * 3 * 120
    assert result.values["baseline"] == "release 1 on the same devices"
    assert result.values["n_baseline"] == result.values["n_live"] == 1440
    assert drift.asked_since == [NOW - timedelta(hours=2)]


def test_a_model_that_swaps_its_classes_fails() -> None:
    drift = FakeDrift(_release(1, seed=10) + _release(2, seed=20, rotate=1, first=3))
    result = _source(drift).evaluate("r1", MODEL, 2, WAVE)
    assert result.outcome is Outcome.FAIL, result.detail
    assert result.detail.startswith(
        "outputs of release 2 differ from release 1 on the same devices"
    )
    assert result.values["p_classes"] < 1e-6
    assert result.values["drifted"] is True


def test_too_few_candidate_outputs_are_inconclusive() -> None:
    drift = FakeDrift(_release(1, seed=10) + _release(2, seed=20, per_window=30, first=3))
    result = _source(drift).evaluate("r1", MODEL, 2, WAVE)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert result.detail == "360 outputs of release 2 on the wave's devices, 500 needed"
    assert result.values == {"min_samples": 500, "release": 2, "samples": 360}

    nothing = _source(FakeDrift(_release(1, seed=10))).evaluate("r1", MODEL, 2, WAVE)
    assert nothing.outcome is Outcome.INCONCLUSIVE and nothing.values["samples"] == 0


def test_only_the_wave_s_devices_count() -> None:
    others = [device(i) for i in range(10, 14)]
    # Plenty of rotated outputs elsewhere; the wave itself has too few.
    drift = FakeDrift(
        _release(1, seed=10)
        + _release(2, seed=20, rotate=1, devices=others, first=3)
        + _release(2, seed=30, per_window=20, first=3)
    )
    result = _source(drift).evaluate("r1", MODEL, 2, WAVE)
    assert result.outcome is Outcome.INCONCLUSIVE and result.values["samples"] == 240


def test_without_a_baseline_the_candidate_is_compared_with_its_reference_outputs() -> None:
    drift = FakeDrift(_release(2, seed=20, first=3), {2: REFERENCE})
    result = _source(drift).evaluate("r1", MODEL, 2, WAVE)
    assert result.outcome is Outcome.PASS, result.detail
    assert result.values["baseline"] == "release 2's reference outputs"
    assert result.values["n_baseline"] == REFERENCE.n

    rotated = FakeDrift(_release(2, seed=20, rotate=1, first=3), {2: REFERENCE})
    failed = _source(rotated).evaluate("r1", MODEL, 2, WAVE)
    assert failed.outcome is Outcome.FAIL
    assert "differ from release 2's reference outputs" in failed.detail


def test_a_baseline_too_small_to_judge_falls_back_to_the_reference() -> None:
    drift = FakeDrift(
        _release(1, seed=10, per_window=10) + _release(2, seed=20, first=3), {2: REFERENCE}
    )
    result = _source(drift).evaluate("r1", MODEL, 2, WAVE)
    assert result.outcome is Outcome.PASS
    assert result.values["baseline"] == "release 2's reference outputs"


def test_a_baseline_that_aged_out_of_the_look_back_is_not_used() -> None:
    old = [
        Window(w.device, w.release, w.start - 3 * 3600, w.length, w.body)
        for w in _release(1, seed=10, rotate=1)
    ]
    drift = FakeDrift(old + _release(2, seed=20, first=3), {2: REFERENCE})
    result = _source(drift).evaluate("r1", MODEL, 2, WAVE)
    assert result.outcome is Outcome.PASS
    assert result.values["baseline"] == "release 2's reference outputs"


def test_no_baseline_and_no_reference_is_inconclusive() -> None:
    result = _source(FakeDrift(_release(2, seed=20, first=3))).evaluate("r1", MODEL, 2, WAVE)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert result.detail == "no baseline outputs to compare with"


def test_a_previous_release_with_other_classes_is_no_baseline() -> None:
    """A new version that adds a class cannot be compared class by class with the old one."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2000, 4))
    p = np.column_stack([np.full(2000, 0.7), np.full(2000, 0.3)])
    two = build_reference(x, p, feature_names=REFERENCE.feature_names, class_names=("a", "b"))
    older = []
    for i, name in enumerate(WAVE):
        accumulator = DriftAccumulator(two)
        accumulator.update(x[i * 300 : (i + 1) * 300], p[i * 300 : (i + 1) * 300])
        older.append(Window(name, 1, START, 60, accumulator.take()))
    drift = FakeDrift(older + _release(2, seed=20, first=3), {2: REFERENCE})
    result = _source(drift).evaluate("r1", MODEL, 2, WAVE)
    assert result.outcome is Outcome.PASS, result.detail
    assert result.values["baseline"] == "release 2's reference outputs"


def test_values_are_ready_for_the_audit_log() -> None:
    drift = FakeDrift(_release(1, seed=10) + _release(2, seed=20, rotate=1, first=3))
    values = _source(drift).evaluate("r1", MODEL, 2, WAVE).to_dict()["values"]
    for name in ("p", "p_classes", "p_confidence", "confidence_shift", "js_classes"):
        assert isinstance(values[name], float) and np.isfinite(values[name]), name
    assert datetime.now(timezone.utc) > NOW  # the source read the injected clock, not this one
