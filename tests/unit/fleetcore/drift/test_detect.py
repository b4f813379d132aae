"""Drift tests: agreement with SciPy, calibration under no drift, power, verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from fleetcore.drift import DriftReference, bin_counts_matrix, build_reference
from fleetcore.drift import _two_sample as ts
from fleetcore.drift._distributions import kolmogorov_sf
from fleetcore.drift.detect import (
    DetectionPolicy,
    benjamini_hochberg,
    persistent,
    test_features,
    test_outputs,
)
from fleetcore.stats import HISTOGRAMS, Moments, output_histograms

F = 4
REF_N = 20_000


def _heavy(rng: np.random.Generator, n: int) -> np.ndarray:
    """Student t with 6 degrees of freedom scaled to unit variance (excess kurtosis 3)."""
    return np.asarray(rng.standard_t(6, n) / math.sqrt(1.5))


@pytest.fixture(scope="module")
def reference() -> DriftReference:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((REF_N, F))
    x[:, 3] = _heavy(rng, REF_N)
    p = np.full((REF_N, 3), 1 / 3)
    names = [f"f{i}" for i in range(F)]
    return build_reference(x, p, feature_names=names, class_names=["a", "b", "c"])


def _window(reference: DriftReference, x: np.ndarray) -> tuple[np.ndarray, list[Moments]]:
    return bin_counts_matrix(x, reference.edges()), [Moments.of(x[:, j]) for j in range(F)]


def _ref_counts(reference: DriftReference, j: int = 0) -> np.ndarray:
    return np.asarray(reference.features[j].counts, dtype=np.int64)


# -- building blocks against SciPy -----------------------------------------


def test_pooling_reaches_the_floor_and_keeps_out_of_range_bins(
    reference: DriftReference,
) -> None:
    ref = _ref_counts(reference)
    assert ref[0] == 0 and ref[-1] == 0  # nothing below/above the reference range
    for n in (12, 80, 500, 5000):
        groups = ts.pool_groups(ref, n, 5.0)
        assert [k for g in groups for k in g] == list(range(ref.size))  # contiguous, complete
        assert all(ref[g].sum() * n / ref.sum() >= 5.0 for g in groups)
    assert len(ts.pool_groups(ref, 80, 5.0)) == 16
    assert ts.pool_groups(ref, 9, 5.0) == [list(range(ref.size))]
    assert ts.bin_tests(ref, np.eye(1, ref.size, 5, dtype=np.int64)[0] * 9, 5.0) is None


def test_bin_tests_match_scipy_contingency(reference: DriftReference) -> None:
    rng = np.random.default_rng(1)
    ref = _ref_counts(reference)
    live = bin_counts_matrix(rng.normal(0.3, 1.2, (300, 1)), reference.edges()[:1])[0]
    result = ts.bin_tests(ref, live, 5.0)
    assert result is not None
    groups = ts.pool_groups(ref, 300, 5.0)
    table = np.vstack([ts.pooled(ref, groups), ts.pooled(live, groups)])
    _, p, dof, _ = stats.chi2_contingency(table, correction=False)
    assert result.df == dof
    assert result.p_chi2 == pytest.approx(p, rel=1e-6)
    g, _, _, _ = stats.chi2_contingency(table, correction=False, lambda_="log-likelihood")
    n = table.sum()
    q = 1 + (n * (1 / table.sum(1)).sum() - 1) * (n * (1 / table.sum(0)).sum() - 1) / (6 * n * dof)
    assert result.p_g == pytest.approx(stats.chi2.sf(g / q, dof), rel=1e-6)


def test_ks_binned_uses_the_two_sample_statistic(reference: DriftReference) -> None:
    rng = np.random.default_rng(2)
    ref = _ref_counts(reference)
    live = bin_counts_matrix(rng.normal(0.2, 1.0, (400, 1)), reference.edges()[:1])[0]
    idx = np.arange(ref.size)
    d = stats.ks_2samp(np.repeat(idx, live), np.repeat(idx, ref)).statistic
    ne = math.sqrt(400 * REF_N / (400 + REF_N))
    assert ts.ks_binned(ref, live) == pytest.approx(
        kolmogorov_sf((ne + 0.12 + 0.11 / ne) * d), rel=1e-12
    )


def test_welch_mean_matches_scipy_statistic() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 5000), rng.normal(0.1, 2.0, 150)
    t = stats.ttest_ind(b, a, equal_var=False).statistic
    assert ts.welch_mean(Moments.of(a), Moments.of(b)) == pytest.approx(
        2 * stats.norm.sf(abs(t)), rel=1e-9
    )
    assert ts.welch_mean(Moments.of([1.0] * 5), Moments.of([1.0] * 7)) == 1.0
    assert ts.welch_mean(Moments.of([1.0] * 5), Moments.of([2.0] * 7)) == 0.0
    assert ts.welch_mean(Moments.of([1.0]), Moments.of([2.0, 3.0])) is None


@given(st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=40))
def test_benjamini_hochberg_matches_scipy(p: list[float]) -> None:
    ours = benjamini_hochberg(p)
    if p:
        np.testing.assert_allclose(ours, stats.false_discovery_control(p, method="bh"), rtol=1e-12)
    else:
        assert ours == []


def test_benjamini_hochberg_refuses_non_probabilities() -> None:
    for bad in ([0.1, 1.2], [math.nan], [-0.01]):
        with pytest.raises(ValueError):
            benjamini_hochberg(bad)


def test_persistent_needs_k_of_the_last_m() -> None:
    assert persistent([True, True, True])
    assert persistent([True, False, True, True])
    assert not persistent([True, True, False, False, True])
    assert not persistent([True, True, True, False, False, False, True])
    assert persistent([True], k=1, m=1)
    assert not persistent([])
    with pytest.raises(ValueError):
        persistent([True], k=5, m=4)
    with pytest.raises(ValueError):
        persistent([True], k=0, m=4)


# -- calibration and power ---------------------------------------------------


@pytest.mark.parametrize("n", [80, 1000])
def test_p_values_are_calibrated_without_drift(reference: DriftReference, n: int) -> None:
    rng = np.random.default_rng(100 + n)
    windows = 500
    rejections = dict.fromkeys(("p_chi2", "p_g", "p_ks", "p_mean", "p_var", "p"), 0)
    drifted = 0
    for _ in range(windows):
        # Heavy tails on one feature: the kurtosis-aware variance test must cope.
        x = rng.standard_normal((n, F))
        x[:, 3] = _heavy(rng, n)
        results = test_features(reference, *_window(reference, x))
        for r in results:
            assert r.testable and r.q is not None
            for name in rejections:
                rejections[name] += getattr(r, name) <= 0.05
            drifted += r.drifted
    trials = windows * F
    rates = {k: v / trials for k, v in rejections.items()}
    # 2000 trials at 5 %: binomial sd 0.5 %, so +-1.6 points is > 3 sd.
    for name in ("p_chi2", "p_mean", "p_var", "p"):
        assert 0.034 <= rates[name] <= 0.066, (name, rates)
    # The G-test is liberal with ~5 expected per bin even after Williams'
    # correction, which is why the combination uses Pearson's statistic.
    assert 0.034 <= rates["p_g"] <= (0.066 if n >= 1000 else 0.085), rates
    assert rates["p_ks"] <= 0.05  # conservative on binned data
    assert drifted / trials <= 0.01


def test_heavy_tails_need_the_kurtosis_term() -> None:
    rng = np.random.default_rng(5)
    ref = Moments.of(rng.laplace(size=50_000))
    p_values = [ts.log_variance_ratio(ref, Moments.of(rng.laplace(size=300))) for _ in range(600)]
    false_alarms = sum(p is not None and p <= 0.01 for p in p_values)
    assert false_alarms / 600 <= 0.025  # a normal-theory F test would alarm ~10 % of the time


def test_power_for_a_fifth_sd_mean_shift_at_n_500(reference: DriftReference) -> None:
    rng = np.random.default_rng(7)
    windows, hits = 150, 0
    for _ in range(windows):
        x = rng.standard_normal((500, F)) + 0.2
        hits += sum(r.drifted for r in test_features(reference, *_window(reference, x)))
    assert hits / (windows * F) >= 0.9


# -- verdicts ------------------------------------------------------------------


def test_significant_but_immaterial_shift_is_not_drift(reference: DriftReference) -> None:
    rng = np.random.default_rng(8)
    x = rng.standard_normal((400_000, F)) + np.array([0.02, 0.0, 0.0, 0.0])
    results = test_features(reference, *_window(reference, x))
    first = results[0]
    assert first.significant and first.q is not None and first.q <= 0.01
    assert not first.material and not first.drifted
    assert abs(first.mean_shift_sd - 0.02) < 0.01  # type: ignore[operator]


def test_variance_and_out_of_range_changes_drift(reference: DriftReference) -> None:
    rng = np.random.default_rng(9)
    x = rng.standard_normal((600, F))
    x[:, 1] *= 1.5
    x[:, 2] = np.abs(x[:, 2]) + 10.0  # everything above the reference range
    results = {r.name: r for r in test_features(reference, *_window(reference, x))}
    assert results["f1"].drifted and results["f1"].strongest_test in ("variance", "chi2")
    assert results["f1"].sd_ratio == pytest.approx(1.5, rel=0.1)
    assert results["f2"].drifted and results["f2"].js is not None and results["f2"].js > 0.9
    assert not results["f0"].drifted and not results["f3"].drifted
    evidence = results["f1"].to_dict()
    assert evidence["name"] == "f1" and evidence["test"] == results["f1"].strongest_test
    assert evidence["effect"] == results["f1"].effect


def test_small_windows_are_not_testable_yet(reference: DriftReference) -> None:
    x = np.random.default_rng(10).standard_normal((30, F))
    results = test_features(reference, *_window(reference, x))
    assert all(not r.testable and r.p is None and r.q is None for r in results)
    assert all("min_n=50" in r.reason for r in results)
    assert not any(r.drifted for r in results)


def test_constant_features() -> None:
    x = np.zeros((1000, 2))
    x[:, 1] = np.random.default_rng(1).standard_normal(1000)
    ref = build_reference(
        x, np.full((1000, 2), 0.5), feature_names=["k", "z"], class_names=["a", "b"]
    )
    live = np.zeros((200, 2))
    live[:, 1] = np.random.default_rng(2).standard_normal(200)
    same = test_features(ref, bin_counts_matrix(live, ref.edges()), [Moments.of(c) for c in live.T])
    assert same[0].testable and same[0].p_chi2 is None and "without bin tests" in same[0].reason
    assert not same[0].drifted and same[0].mean_shift_sd == 0.0
    live[:, 0] = 1.0
    moved = test_features(
        ref, bin_counts_matrix(live, ref.edges()), [Moments.of(c) for c in live.T]
    )
    assert moved[0].drifted and moved[0].mean_shift_sd == math.inf


def test_bad_inputs_are_refused(reference: DriftReference) -> None:
    x = np.random.default_rng(3).standard_normal((100, F))
    counts, moments = _window(reference, x)
    with pytest.raises(ValueError, match="shape"):
        test_features(reference, counts[:, :17], moments)
    with pytest.raises(ValueError, match="moments"):
        test_features(reference, counts, moments[:2])
    with pytest.raises(ValueError, match="negative"):
        test_features(reference, -counts, moments)
    with pytest.raises(ValueError, match="integer"):
        test_features(reference, counts + 0.5, moments)
    with pytest.raises(ValueError, match="n=100"):
        test_features(reference, counts * 2, moments)
    for bad in (
        {"alpha": 0.0},
        {"min_n": 1},
        {"min_expected": 0.0},
        {"sd_ratio_band": (1.1, 1.2)},
        {"min_js_distance": -1.0},
    ):
        with pytest.raises(ValueError):
            DetectionPolicy(**bad)


# -- outputs -------------------------------------------------------------------


def _outputs(
    rng: np.random.Generator, n: int, temperature: float, bias: float
) -> tuple[np.ndarray, np.ndarray]:
    z = rng.normal(0, 1.5, (n, 3)) + np.array([bias, 0.0, 0.0])
    e = np.exp(z / temperature)
    p = e / e.sum(axis=1, keepdims=True)
    hists = output_histograms(p)
    return (
        np.bincount(p.argmax(axis=1), minlength=3),
        np.array([hists[h] for h in HISTOGRAMS]),
    )


def test_outputs_same_release_behaviour_is_calm() -> None:
    rng = np.random.default_rng(4)
    alarms = 0
    for _ in range(100):
        result = test_outputs(*_outputs(rng, 800, 1.0, 0.0), *_outputs(rng, 700, 1.0, 0.0))
        assert result.testable and result.p is not None
        alarms += result.drifted
    assert alarms <= 3


def test_outputs_detect_confidence_and_class_mix_changes() -> None:
    rng = np.random.default_rng(5)
    base = _outputs(rng, 2000, 1.0, 0.0)
    sharper = test_outputs(*base, *_outputs(rng, 2000, 0.6, 0.0))
    assert sharper.drifted and sharper.confidence_shift is not None
    assert sharper.confidence_shift > 0.05
    mix = test_outputs(*base, *_outputs(rng, 2000, 1.0, 1.0))
    assert mix.drifted and mix.p_classes is not None and mix.p_classes < 1e-6
    small = test_outputs(*base, *_outputs(rng, 20, 1.0, 0.0))
    assert not small.testable and "min_n" in small.reason and not small.drifted
    assert small.to_dict()["n_live"] == 20


def test_outputs_refuse_mismatched_inputs() -> None:
    rng = np.random.default_rng(6)
    classes, hists = _outputs(rng, 100, 1.0, 0.0)
    with pytest.raises(ValueError, match="shape"):
        test_outputs(classes, hists, classes[:2], hists)
    with pytest.raises(ValueError, match="disagree"):
        test_outputs(classes, hists, classes * 2, hists)
    with pytest.raises(ValueError, match="shape"):
        test_outputs(classes, hists[:2], classes, hists)
