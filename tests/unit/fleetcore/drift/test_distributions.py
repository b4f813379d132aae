"""Tail probabilities against SciPy's reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from fleetcore.drift._distributions import (
    cauchy_combination,
    chi2_sf,
    gamma_q,
    kolmogorov_sf,
    normal_quantile,
    normal_sf,
    normal_two_sided,
)

RTOL = 1e-6


def _close(ours: float, theirs: float) -> None:
    assert ours == pytest.approx(theirs, rel=RTOL, abs=1e-300)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 15, 16, 30, 99, 250])
def test_chi2_sf_matches_scipy_from_bulk_to_far_tail(df: int) -> None:
    for x in np.concatenate([np.linspace(1e-3, 3 * df + 60, 200), [1e-9, 0.5, df, 700.0]]):
        _close(chi2_sf(float(x), df), float(stats.chi2.sf(x, df)))


def test_chi2_sf_non_integer_df_and_gamma_edges() -> None:
    for df, x in [(0.5, 0.2), (2.5, 9.0), (17.3, 12.0), (1e-3, 1e-4)]:
        _close(chi2_sf(x, df), float(stats.chi2.sf(x, df)))
    assert gamma_q(3.0, 0.0) == 1.0
    assert gamma_q(3.0, -1.0) == 1.0
    assert gamma_q(3.0, math.inf) == 0.0
    with pytest.raises(ValueError, match="shape"):
        gamma_q(0.0, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        chi2_sf(math.nan, 3)
    with pytest.raises(ValueError, match="degrees"):
        chi2_sf(1.0, 0)


def test_kolmogorov_sf_matches_kstwobign() -> None:
    for x in np.concatenate([np.linspace(0.05, 6.0, 400), [0.99999, 1.0, 1.00001]]):
        _close(kolmogorov_sf(float(x)), float(stats.kstwobign.sf(x)))
    assert kolmogorov_sf(0.0) == 1.0
    assert kolmogorov_sf(-3.0) == 1.0


def test_normal_tails_and_quantile_match_scipy() -> None:
    for z in np.linspace(-8.0, 37.0, 300):
        _close(normal_sf(float(z)), float(stats.norm.sf(z)))
        _close(normal_two_sided(float(z)), float(min(1.0, 2 * stats.norm.sf(abs(z)))))
    for p in [1e-300, 1e-12, 1e-6, 0.001, 0.025, 0.3, 0.5, 0.77, 0.975, 1 - 1e-12]:
        assert normal_quantile(p) == pytest.approx(float(stats.norm.ppf(p)), rel=1e-9, abs=1e-12)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError):
            normal_quantile(bad)


def _cauchy_reference(p: list[float]) -> float:
    t = float(np.mean(np.tan((0.5 - np.asarray(p)) * np.pi)))
    return float(stats.cauchy.sf(t))


def test_cauchy_combination_matches_its_definition() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        p = list(rng.uniform(1e-6, 0.999, size=int(rng.integers(1, 6))))
        assert cauchy_combination(p) == pytest.approx(_cauchy_reference(p), rel=1e-8)


def test_cauchy_combination_edge_values() -> None:
    # One p-value, or identical ones (perfect dependence), come back unchanged.
    for p in (1e-200, 1e-9, 0.003, 0.4, 0.9):
        assert cauchy_combination([p]) == pytest.approx(p, rel=1e-9)
        assert cauchy_combination([p, p, p, p]) == pytest.approx(p, rel=1e-9)
    # One sharp test among null ones: about (number of tests) times its p-value.
    assert cauchy_combination([1e-8, 0.5, 0.5, 0.5]) == pytest.approx(4e-8, rel=1e-6)
    assert cauchy_combination([0.0, 0.9]) == 0.0
    assert cauchy_combination([1.0, 1.0]) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError):
        cauchy_combination([])
    with pytest.raises(ValueError):
        cauchy_combination([1.5])
    with pytest.raises(ValueError):
        cauchy_combination([math.nan])


@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=8))
def test_cauchy_combination_is_a_probability(p: list[float]) -> None:
    combined = cauchy_combination(p)
    assert 0.0 <= combined <= 1.0
    # The mean of cot(p pi) never exceeds its largest term, so agreement
    # between tests never manufactures more significance than the best one.
    assert combined >= min(*p, 1e-300) * (1 - 1e-9)
