"""Label-free accuracy estimate and the labelled Wilson interval."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from fleetcore.drift import AccuracyTable, DriftReference, build_reference
from fleetcore.drift.estimate import (
    AccuracyEstimate,
    bin_accuracies,
    estimate_accuracy,
    wilson_interval,
)
from fleetcore.stats import OUTPUT_BINS

K = 3


@pytest.fixture(scope="module")
def reference() -> DriftReference:
    rng = np.random.default_rng(21)
    n = 20_000
    z = rng.normal(0, 2.0, (n, K))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    # Labels drawn from the model's own probabilities: a calibrated model.
    y = (rng.random(n)[:, None] > p.cumsum(axis=1)).sum(axis=1)
    return build_reference(
        rng.standard_normal((n, 2)), p, y, feature_names=["a", "b"], class_names=["x", "y", "z"]
    )


def test_wilson_matches_scipy() -> None:
    for k, n in [(0, 10), (3, 10), (10, 10), (417, 500), (9_990, 10_000)]:
        for level in (0.9, 0.95, 0.99):
            ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
            low, high = wilson_interval(k, n, level)
            assert low == pytest.approx(ci.low, abs=1e-12)
            assert high == pytest.approx(ci.high, abs=1e-12)
    with pytest.raises(ValueError):
        wilson_interval(3, 0)
    with pytest.raises(ValueError):
        wilson_interval(4, 3)


def test_labels_replace_the_estimate(reference: DriftReference) -> None:
    live = np.asarray(reference.output.max_probability.counts) // 10
    labelled = np.zeros(OUTPUT_BINS, dtype=np.int64)
    correct = np.zeros(OUTPUT_BINS, dtype=np.int64)
    labelled[-1], correct[-1] = 40, 30
    result = estimate_accuracy(reference, live, labelled, correct)
    assert result == AccuracyEstimate(0.75, *wilson_interval(30, 40), 40, True, "wilson")
    few = estimate_accuracy(reference, live, labelled // 10, correct // 10)
    assert few is not None and not few.labelled and few.method == "cbpe"
    assert estimate_accuracy(reference, live, labelled // 10, correct // 10, min_labelled=1) == (
        AccuracyEstimate(0.75, *wilson_interval(3, 4), 4, True, "wilson")
    )


def test_cbpe_agrees_with_the_reference_table(reference: DriftReference) -> None:
    live = np.asarray(reference.output.max_probability.counts)
    result = estimate_accuracy(reference, live)
    assert result is not None and result.method == "cbpe" and not result.labelled
    assert reference.accuracy is not None
    assert result.value == pytest.approx(reference.accuracy.accuracy(), abs=0.002)
    assert result.low < result.value < result.high
    assert result.n == int(live.sum())
    # Only confident predictions: a higher estimate.
    confident = np.zeros(OUTPUT_BINS, dtype=np.int64)
    confident[-3:] = 1000
    high = estimate_accuracy(reference, confident)
    assert high is not None and high.value > result.value + 0.1


def test_interval_covers_the_population_accuracy() -> None:
    """When P(correct | confidence) holds, 95 % intervals cover ~95 % of the time."""
    rng = np.random.default_rng(22)
    mids = (np.arange(OUTPUT_BINS) + 0.5) / OUTPUT_BINS * (1 - 1 / K) + 1 / K
    truth = np.clip(mids - 0.05, 0, 1)  # slightly overconfident, known per bin
    ref_share = np.exp(-((np.arange(OUTPUT_BINS) - 12) ** 2) / 30)
    ref_share /= ref_share.sum()
    live_share = np.exp(-((np.arange(OUTPUT_BINS) - 7) ** 2) / 20)
    live_share /= live_share.sum()  # covariate shift towards less confident inputs
    population = float((live_share * truth).sum())
    base = None
    covered, trials = 0, 1500
    for _ in range(trials):
        count = rng.multinomial(3000, ref_share)
        table = AccuracyTable(
            count=tuple(int(c) for c in count),
            correct=tuple(int(c) for c in rng.binomial(count, truth)),
        )
        base = base or _reference_with(table)
        ref = dataclasses.replace(
            base,
            output=dataclasses.replace(
                base.output,
                max_probability=dataclasses.replace(
                    base.output.max_probability, counts=table.count
                ),
            ),
            accuracy=table,
        )
        result = estimate_accuracy(ref, rng.multinomial(2000, live_share))
        assert result is not None
        covered += result.low <= population <= result.high
    assert 0.93 <= covered / trials <= 0.97


def _reference_with(table: AccuracyTable) -> DriftReference:
    n = sum(table.count)
    rng = np.random.default_rng(0)
    # Any reference of the right size; its max-probability counts are replaced.
    p = np.tile(np.array([0.6, 0.3, 0.1]), (n, 1))
    return build_reference(
        rng.standard_normal((n, 1)), p, feature_names=["a"], class_names=["x", "y", "z"]
    )


def test_nothing_to_estimate(reference: DriftReference) -> None:
    assert estimate_accuracy(reference, np.zeros(OUTPUT_BINS, dtype=np.int64)) is None
    unlabelled = dataclasses.replace(reference, accuracy=None)
    assert bin_accuracies(unlabelled) is None
    assert estimate_accuracy(unlabelled, np.ones(OUTPUT_BINS, dtype=np.int64)) is None


def test_bad_inputs_are_refused(reference: DriftReference) -> None:
    ones = np.ones(OUTPUT_BINS, dtype=np.int64)
    with pytest.raises(ValueError, match="shape"):
        estimate_accuracy(reference, ones[:5])
    with pytest.raises(ValueError, match="negative"):
        estimate_accuracy(reference, -ones)
    with pytest.raises(ValueError, match="together"):
        estimate_accuracy(reference, ones, labelled=ones)
    with pytest.raises(ValueError, match="more correct"):
        estimate_accuracy(reference, ones, ones, ones * 2)
    with pytest.raises(ValueError, match="confidence"):
        estimate_accuracy(reference, ones, confidence=1.0)


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=20, max_size=20))
def test_estimates_are_ordered_probabilities(counts: list[int]) -> None:
    ref = _fixed_reference()
    result = estimate_accuracy(ref, counts)
    if sum(counts) == 0:
        assert result is None
    else:
        assert result is not None
        assert 0.0 <= result.low <= result.value <= result.high <= 1.0


_CACHE: dict[str, DriftReference] = {}


def _fixed_reference() -> DriftReference:
    if "ref" not in _CACHE:
        rng = np.random.default_rng(5)
        z = rng.normal(0, 2.0, (2000, K))
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        y = rng.integers(0, K, 2000)
        _CACHE["ref"] = build_reference(
            rng.standard_normal((2000, 1)), p, y, feature_names=["a"], class_names=["x", "y", "z"]
        )
    return _CACHE["ref"]
