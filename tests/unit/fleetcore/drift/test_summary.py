"""Drift summaries on the device: exact counts, merged moments, buffering."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats as scipy_stats

from fleetcore.drift import _merge
from fleetcore.drift.summary import (
    DriftAccumulator,
    DriftCounts,
    merge_all,
)
from fleetcore.errors import ProtocolError
from fleetcore.stats import bin_counts_matrix, histogram, output_histograms, output_ranges

from ._summary_data import CLASSES, FEATURES, accumulate, key, live, reference

F, K = len(FEATURES), len(CLASSES)
COUNT_FIELDS = ("counts", "nan", "inf", "class_counts", "histograms", "labelled", "correct")


def _same_counts(a: DriftCounts, b: DriftCounts) -> None:
    for name in COUNT_FIELDS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def _close_moments(a: DriftCounts, b: DriftCounts, rtol: float = 1e-9) -> None:
    assert np.array_equal(a.moments[:, 0], b.moments[:, 0])
    np.testing.assert_allclose(a.moments, b.moments, rtol=rtol, atol=1e-9)


# A live value is drawn near the edges (the hard cases), or anywhere, or non-finite.
_EDGE_VALUES = sorted({float(v) for e in reference().edges() for v in e})
_values = st.one_of(
    st.sampled_from(_EDGE_VALUES),
    st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300]),
)


@st.composite
def batches(draw: st.DrawFn, max_rows: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rows = draw(st.integers(0, max_rows))
    x = draw(hnp.arrays(np.float64, (rows, F), elements=_values))
    # Many values sit exactly on their own feature's edges (incl. the closed last one).
    edges = reference().edges()
    on_edge = draw(hnp.arrays(np.bool_, (rows, F)))
    which = draw(hnp.arrays(np.int64, (rows, F), elements=st.integers(0, edges.shape[1] - 1)))
    x = np.where(on_edge, edges[np.arange(F)[None, :], which], x)
    logits = draw(hnp.arrays(np.float64, (rows, K), elements=st.floats(-20, 20)))
    return x, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


@settings(max_examples=60, deadline=None)
@given(batches(max_rows=1100))
def test_counts_are_exactly_the_reference_binning(batch: tuple[np.ndarray, np.ndarray]) -> None:
    x, p = batch
    c = accumulate(x, p)
    assert np.array_equal(c.counts, bin_counts_matrix(x, reference().edges()))
    assert np.array_equal(c.nan, np.isnan(x).sum(axis=0))
    assert np.array_equal(c.inf, np.isinf(x).sum(axis=0))
    assert c.n == x.shape[0]
    if x.shape[0]:
        hists = output_histograms(p)
        for row, name in enumerate(("entropy", "margin", "max_probability")):
            assert np.array_equal(c.histograms[row], hists[name])
        assert np.array_equal(c.class_counts, np.bincount(p.argmax(axis=1), minlength=K))


@settings(max_examples=40, deadline=None)
@given(batches(), st.lists(st.integers(1, 30), max_size=6))
def test_batched_and_one_by_one_updates_agree(
    batch: tuple[np.ndarray, np.ndarray], cuts: list[int]
) -> None:
    x, p = batch
    whole = accumulate(x, p)
    acc = DriftAccumulator(reference())
    start = 0
    for size in cuts:
        acc.update(x[start : start + size], p[start : start + size])
        start += size
    for i in range(start, x.shape[0]):
        acc.update(x[i], p[i])  # single rows, buffered
    assert acc.n == x.shape[0]
    pieces = acc.take()
    _same_counts(whole, pieces)
    _close_moments(whole, pieces)


@settings(max_examples=40, deadline=None)
@given(st.lists(batches(), min_size=1, max_size=5), st.randoms(use_true_random=False))
def test_merge_is_exact_commutative_and_associative(
    parts: list[tuple[np.ndarray, np.ndarray]], rnd: object
) -> None:
    bodies = [accumulate(x, p) for x, p in parts]
    pooled = accumulate(
        np.concatenate([x for x, _ in parts]), np.concatenate([p for _, p in parts])
    )
    left = bodies[0]
    for b in bodies[1:]:
        left = left.merge(b)
    shuffled = list(bodies)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    right = shuffled[-1]
    for b in reversed(shuffled[:-1]):
        right = b.merge(right)
    for merged in (left, right, merge_all(bodies), merge_all(shuffled)):
        _same_counts(merged, pooled)
        _close_moments(merged, pooled, rtol=1e-7)


@settings(max_examples=50, deadline=None)
@given(
    hnp.arrays(np.float64, st.integers(2, 400), elements=st.floats(-1e4, 1e4)),
    st.lists(st.integers(1, 100), max_size=5),
)
def test_merged_moments_match_numpy_and_scipy(values: np.ndarray, cuts: list[int]) -> None:
    x = np.column_stack([values] * F)
    p = np.full((values.size, K), 1.0 / K)
    acc = DriftAccumulator(reference())
    start = 0
    for size in cuts:
        acc.update(x[start : start + size], p[start : start + size])
        start += size
    acc.update(x[start:], p[start:])
    m = acc.take().feature_moments(0)
    assert m.n == values.size
    assert m.min == values.min() and m.max == values.max()
    scale = max(float(np.abs(values).max()), 1.0)
    assert m.mean == pytest.approx(values.mean(), rel=1e-12, abs=1e-12 * scale)
    assert m.variance(0) == pytest.approx(values.var(), rel=1e-9, abs=1e-12 * scale**2)
    if values.var() > 1e-6 * scale**2:
        assert m.skewness() == pytest.approx(scipy_stats.skew(values), rel=1e-6, abs=1e-9)
        assert m.excess_kurtosis() == pytest.approx(
            scipy_stats.kurtosis(values), rel=1e-6, abs=1e-9
        )


def test_values_on_and_beside_every_edge_bin_like_the_reference() -> None:
    edges = reference().edges()
    below, above = np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)
    x = np.concatenate([edges, below, above], axis=1).T  # [51, F], column j: feature j's
    p = np.full((x.shape[0], K), 1.0 / K)
    assert np.array_equal(accumulate(x, p).counts, bin_counts_matrix(x, edges))


def test_non_finite_values_are_counted_apart_not_in_moments() -> None:
    x, p = live(50, seed=3)
    x[0, 0], x[1, 0], x[2, 0] = math.nan, math.inf, -math.inf
    x[:, 3] = math.nan  # a feature with no finite value at all
    c = accumulate(x, p)
    assert (c.nan[0], c.inf[0], c.counts[0].sum()) == (1, 2, 47)
    m = c.feature_moments(0)
    assert m.n == 47 and m.mean == pytest.approx(x[3:, 0].mean(), rel=1e-12)
    assert m.max == x[3:, 0].max()
    empty = c.feature_moments(3)
    assert (empty.n, empty.mean, empty.min, empty.max) == (0, 0.0, math.inf, -math.inf)
    assert c.nan[3] == 50 and c.counts[3].sum() == 0


def test_overflowing_sums_are_marked_unknown_not_wrong() -> None:
    x, p = live(20, seed=4)
    x[:10, 1] = 1e200
    x[10:, 1] = -1e200
    c = accumulate(x, p)
    assert np.isnan(c.moments[1, 1:5]).all()
    assert c.moments[1, 0] == 20 and c.moments[1, 5] == -1e200 and c.moments[1, 6] == 1e200
    assert c.merge(c).moments[1, 0] == 40 and np.isnan(c.merge(c).moments[1, 1])
    assert np.isfinite(c.moments[0]).all()


def test_take_includes_buffered_rows_and_starts_over() -> None:
    acc = DriftAccumulator(reference())
    x, p = live(3, seed=5)
    for i in range(3):
        acc.update(x[i], p[i])
    assert acc.n == 3
    first = acc.take()
    assert first.n == 3 and acc.n == 0
    _same_counts(first, accumulate(x, p))
    second = acc.take()
    assert second == DriftCounts.empty(F, K)


def test_buffer_folds_when_full_and_rows_span_folds() -> None:
    acc = DriftAccumulator(reference())
    x, p = live(2500, seed=6)
    acc.update(x[:7], p[:7])
    acc.update(x[7:1500], p[7:1500])
    for i in range(1500, 2500):
        acc.update(x[i], p[i])
    c = acc.take()
    assert c.n == 2500
    assert np.array_equal(c.counts, bin_counts_matrix(x, reference().edges()))


def test_bad_updates_are_refused_and_add_nothing() -> None:
    acc = DriftAccumulator(reference())
    x, p = live(4, seed=7)
    acc.update(x[:2], p[:2])
    bad_p = p.copy()
    bad_p[1, 0] = math.nan
    cases = [
        (x[:, :3], p),
        (x, p[:3]),
        (x[0], p),
        (x[0][:3], p[0]),
        (x, bad_p),
        (x[1], bad_p[1]),
        (np.zeros((2, F, 1)), p[:2]),
    ]
    for inputs, probs in cases:
        with pytest.raises(ValueError, match=r"probabilities|inputs"):
            acc.update(inputs, probs)
        assert acc.n == 2
    _same_counts(acc.take(), accumulate(x[:2], p[:2]))


def test_feedback_uses_the_max_probability_bins() -> None:
    acc = DriftAccumulator(reference())
    low, high = output_ranges(K)["max_probability"]
    values = [low, 0.5, 0.51, 0.99, 1.0, 1.2, 0.0]
    for i, v in enumerate(values):
        acc.feedback(v, correct=i % 2 == 0)
    c = acc.take()
    assert np.array_equal(c.labelled, histogram(values, low, high))
    assert np.array_equal(c.correct, histogram(values[::2], low, high))
    assert c.n == 0  # labels are not samples
    with pytest.raises(ValueError, match="finite"):
        acc.feedback(math.nan, True)


def test_counts_are_read_only_copies_and_compare_by_value() -> None:
    x, p = live(30, seed=8)
    c = accumulate(x, p)
    with pytest.raises(ValueError, match="read-only"):
        c.counts[0, 0] = 5
    raw = {f.name: np.array(getattr(c, f.name)) for f in dataclasses.fields(c)}
    copy = DriftCounts(**raw)
    raw["counts"][0, 0] += 1  # the constructor copied: no effect
    assert copy == c and copy is not c
    assert c != DriftCounts.empty(F, K)
    assert c.n_features == F and c.n_classes == K and c.n == 30


def _mutated(c: DriftCounts, name: str, change: object) -> dict[str, np.ndarray]:
    raw = {f.name: np.array(getattr(c, f.name)) for f in dataclasses.fields(c)}
    change(raw[name])  # type: ignore[operator]
    return raw


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("counts", lambda a: a.__setitem__((0, 3), a[0, 3] + 1), "counts do not sum"),
        ("nan", lambda a: a.__setitem__(1, a[1] + 1), "counts do not sum"),
        ("class_counts", lambda a: a.__setitem__(0, a[0] + 1), "do not sum|histogram"),
        ("histograms", lambda a: a.__setitem__((1, 0), a[1, 0] + 1), "margin histogram"),
        ("correct", lambda a: a.__setitem__(19, 99), "more correct"),
        ("counts", lambda a: a.__setitem__((0, 0), -1), "0\\.\\."),
        ("moments", lambda a: a.__setitem__((0, 0), a[0, 0] + 1), "moments n"),
        ("moments", lambda a: a.__setitem__((0, 2), -1.0), "negative"),
        ("moments", lambda a: a.__setitem__((0, 3), math.nan), "all finite or all NaN"),
        ("moments", lambda a: a.__setitem__((0, 5), 1e9), "min must not exceed max"),
    ],
)
def test_counts_refuse_broken_invariants(name: str, change: object, message: str) -> None:
    x, p = live(30, seed=9)
    with pytest.raises(ValueError, match=message):
        DriftCounts(**_mutated(accumulate(x, p), name, change))


def test_counts_refuse_bad_shapes_and_types() -> None:
    c = DriftCounts.empty(F, K)
    raw = {f.name: np.array(getattr(c, f.name)) for f in dataclasses.fields(c)}
    with pytest.raises(ValueError, match="integers"):
        DriftCounts(**{**raw, "nan": raw["nan"].astype(float)})
    with pytest.raises(ValueError, match="shape"):
        DriftCounts(**{**raw, "labelled": np.zeros(19, dtype=np.int64)})
    with pytest.raises(ValueError, match="two classes"):
        DriftCounts.empty(F, 1)


def test_merge_all_refuses_nothing_and_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="nothing"):
        merge_all([])
    with pytest.raises(ValueError, match="cannot merge"):
        DriftCounts.empty(4, 3).merge(DriftCounts.empty(5, 3))
    with pytest.raises(ValueError, match="cannot merge"):
        merge_all([DriftCounts.empty(4, 3), DriftCounts.empty(4, 2)])
    one = DriftCounts.empty(4, 3)
    assert merge_all([one]) is one


def test_empty_side_of_a_merge_is_the_identity_bit_for_bit() -> None:
    x, p = live(10, seed=10)
    c = accumulate(x, p)
    empty = DriftCounts.empty(F, K)
    assert np.array_equal(c.merge(empty).moments, c.moments)
    assert np.array_equal(empty.merge(c).moments, c.moments)
    x[:, 0] += 1e200  # the formulas would turn 0 * inf into NaN here
    huge = accumulate(x, p)
    assert np.array_equal(huge.merge(empty).moments, huge.moments, equal_nan=True)
    assert np.isfinite(huge.moments[0, 1])


def test_binner_refuses_blocks_it_cannot_sum() -> None:
    binner = _merge.Binner(reference().edges())
    with pytest.raises(ValueError, match="multiple of 8"):
        binner.reach(np.zeros((F, 7)))
    with pytest.raises(ValueError, match="edges"):
        _merge.Binner(np.zeros((F, 3)))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"device": "X"}, "device id"),
        ({"model": "bad model"}, "model name"),
        ({"reference": "ab" * 31}, "digest"),
        ({"release": 0}, "release"),
        ({"seq": 2**31}, "seq"),
        ({"release": True}, "release"),
        ({"length": 0}, "length"),
        ({"length": 86401}, "length"),
        ({"start": -60}, "start"),
        ({"start": 1_700_000_001}, "multiple"),
    ],
)
def test_window_key_refuses_bad_fields(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        key(**changes)
