"""Fleet drift analysis: evidence windows, persistence, breadth and accuracy, on seeded data."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.drift.analysis import AnalysisSettings, Window, analyze, evidence_windows
from tests.unit.control_plane.drift.support import (
    FEATURES,
    REFERENCE,
    SETTINGS,
    START,
    UNLABELLED,
    WINDOW_S,
    device,
    device_windows,
    fleet,
)

SHIFTED = {1: 0.5}  # f1 moves by half a reference standard deviation


def _upto(windows: list[Window], k: int) -> list[Window]:
    """The windows of the first ``k`` minutes."""
    return [w for w in windows if w.start < START + k * WINDOW_S]


# -- no drift ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_drift_raises_no_alarm_and_almost_no_window_drifts(seed: int) -> None:
    windows: list[Window] = []
    for i in range(4):
        windows += device_windows(REFERENCE, device(i), 12, 120, seed=seed * 100 + i)
    result = analyze(REFERENCE, 1, windows, SETTINGS)
    assert not result.alarm and result.persistent_features == ()
    tested = [w for w in result.windows if w.tested]
    assert len(tested) == 12
    # BH at alpha=0.01 over 4 features: a false drifted window is rare; two in 12 is not noise.
    assert sum(1 for w in tested if w.drifted) <= 1
    assert result.devices_tested == 4 and result.devices_drifted == 0
    assert result.share_devices == 0.0 and result.share_traffic == 0.0
    assert all(f.testable for f in result.span)


# -- persistence -------------------------------------------------------------------------------


def test_a_half_sd_shift_on_every_device_alarms_after_persist_k_windows_not_before() -> None:
    windows = fleet(range(4), count=6, shift=SHIFTED)
    for k in range(1, 7):
        result = analyze(REFERENCE, 1, _upto(windows, k), SETTINGS)
        assert all("f1" in w.drifted for w in result.windows)
        # Another feature may be a chance discovery in one window; never persistently.
        assert sum(len(w.drifted) - 1 for w in result.windows) <= 1
        assert result.windows_considered == min(k, SETTINGS.persist_m)
        assert result.windows_drifted == min(k, SETTINGS.persist_m)
        assert result.drifted_windows["f1"] == min(k, SETTINGS.persist_m)
        assert result.alarm is (k >= SETTINGS.persist_k), k
    assert result.persistent_features == ("f1",)
    assert {f.name for f in result.span if f.drifted} == {"f1"}
    (f1,) = [f for f in result.span if f.name == "f1"]
    assert f1.mean_shift_sd == pytest.approx(0.5, abs=0.08)
    assert f1.q is not None and f1.q < 1e-6
    # The span is the last persist_m tested windows.
    assert result.span_start == START + 2 * WINDOW_S and result.span_end == START + 6 * WINDOW_S
    assert result.samples == 4 * 4 * 120


def test_drift_that_stopped_no_longer_alarms_and_a_gap_still_counts() -> None:
    def minutes(first: int, count: int, shift: dict[int, float] | None) -> list[Window]:
        return [
            w
            for i in range(4)
            for w in device_windows(
                REFERENCE, device(i), count, 120, seed=50 * first + i, shift=shift, first=first
            )
        ]

    # drift, drift, clean, drift: 3 of the last 4.
    gap = minutes(0, 2, SHIFTED) + minutes(2, 1, None) + minutes(3, 1, SHIFTED)
    result = analyze(REFERENCE, 1, gap, SETTINGS)
    assert [bool(w.drifted) for w in result.windows] == [True, True, False, True]
    assert result.alarm and result.windows_drifted == 3

    # Then three clean minutes: 1 of the last 4.
    stopped = analyze(REFERENCE, 1, gap + minutes(4, 3, None), SETTINGS)
    assert not stopped.alarm
    assert stopped.windows_drifted == 1 and stopped.windows_considered == 4


# -- evidence windows ------------------------------------------------------------------------


def test_buckets_merge_until_min_samples_and_a_short_tail_is_not_tested() -> None:
    windows = device_windows(REFERENCE, device(0), 7, 30, seed=9)
    found = evidence_windows(REFERENCE, windows, SETTINGS)
    assert [(w.start - START, w.end - START, w.n, w.tested) for w in found] == [
        (0, 180, 90, True),
        (180, 360, 90, True),
        (360, 420, 30, False),
    ]
    assert found[-1].features == () and found[-1].drifted == ()
    assert all(len(w.features) == len(FEATURES) for w in found[:2])
    assert all(w.devices == 1 for w in found)

    # A short tail alone never alarms: 30 samples are evidence of nothing.
    assert not analyze(REFERENCE, 1, windows[-1:], SETTINGS).windows[0].tested


def test_windows_of_several_devices_in_one_bucket_are_merged_first() -> None:
    windows = [
        w for i in range(4) for w in device_windows(REFERENCE, device(i), 3, 30, seed=i)
    ]  # 4 x 30 = 120 >= 80 per minute
    found = evidence_windows(REFERENCE, windows, SETTINGS)
    assert [(w.n, w.devices, w.tested) for w in found] == [(120, 4, True)] * 3


def test_a_longer_bucket_holds_several_windows() -> None:
    windows = fleet([], count=6, per_window=30)
    hourly = AnalysisSettings(bucket_s=180, min_samples=80, persist_k=1, persist_m=1)
    found = evidence_windows(REFERENCE, windows, hourly)
    assert [(w.start - START, w.end - START, w.n) for w in found] == [
        (0, 180, 360),
        (180, 360, 360),
    ]


# -- breadth -----------------------------------------------------------------------------------


def test_breadth_shares_of_devices_and_of_traffic() -> None:
    per_window = {0: 200, 1: 150, 2: 100, 3: 90}  # devices 0 and 1 drift
    windows: list[Window] = []
    for i, n in per_window.items():
        shift = SHIFTED if i in (0, 1) else None
        windows += device_windows(REFERENCE, device(i), 6, n, seed=10 + i, shift=shift)
    # A device with too few samples in the span is not tested at all.
    windows += device_windows(REFERENCE, device(9), 1, 20, seed=99, shift={1: 3.0}, first=5)
    result = analyze(REFERENCE, 1, windows, SETTINGS)
    assert result.alarm
    assert result.devices_tested == 4 and result.devices_drifted == 2
    assert result.share_devices == 0.5
    assert result.span_start is not None and result.span_end is not None
    span = [w for w in windows if result.span_start <= w.start < result.span_end]
    by_device = {d: sum(w.body.n for w in span if w.device == d) for d in map(device, range(4))}
    drifted = by_device[device(0)] + by_device[device(1)]
    assert result.share_traffic == pytest.approx(drifted / sum(by_device.values()))
    assert result.share_traffic == pytest.approx(350 / 540)


# -- accuracy ----------------------------------------------------------------------------------


def test_label_free_accuracy_estimate_when_the_reference_has_an_accuracy_table() -> None:
    result = analyze(REFERENCE, 1, fleet([]), SETTINGS)
    assert result.reference_accuracy is not None
    accuracy = result.accuracy
    assert accuracy is not None
    assert accuracy.method == "cbpe" and not accuracy.labelled
    assert accuracy.n == result.samples
    # Same distribution, calibrated model: the estimate covers the reference's accuracy.
    assert accuracy.low <= result.reference_accuracy <= accuracy.high
    assert accuracy.high - accuracy.low < 0.05

    bare = analyze(UNLABELLED, 1, fleet([], reference=UNLABELLED), SETTINGS)
    assert bare.accuracy is None and bare.reference_accuracy is None


def test_device_labels_replace_the_estimate_once_there_are_enough() -> None:
    few = device_windows(REFERENCE, device(0), 4, 120, seed=3, feedback=10)
    assert analyze(REFERENCE, 1, few, SETTINGS).accuracy.method == "cbpe"  # type: ignore[union-attr]
    many = device_windows(REFERENCE, device(0), 4, 120, seed=3, feedback=60)
    result = analyze(REFERENCE, 1, many, SETTINGS)
    accuracy = result.accuracy
    assert accuracy is not None and accuracy.labelled and accuracy.method == "wilson"
    assert accuracy.n == 240
    assert accuracy.low <= 0.69 <= accuracy.high  # the generator's true accuracy is about 0.69


# -- order --------------------------------------------------------------------------------------

_MIXED = fleet([0, 2], count=5, per_window=60) + device_windows(
    REFERENCE, device(7), 2, 25, seed=77, first=5
)


@settings(max_examples=15, deadline=None)
@given(st.randoms(use_true_random=False))
def test_the_order_of_windows_does_not_change_the_result(rnd: random.Random) -> None:
    expected = repr(analyze(REFERENCE, 1, _MIXED, SETTINGS))
    shuffled = list(_MIXED)
    rnd.shuffle(shuffled)
    assert repr(analyze(REFERENCE, 1, shuffled, SETTINGS)) == expected
