"""Two-sample tests and effect sizes on binned counts and moments.

Theory of operation: every test compares a *reference* sample (``r``, size
``N``) with a *live* sample (``l``, size ``n``), and both are treated as
finite samples, so the same code serves a training reference (``N`` large) and
a previous release's outputs on a rollout cohort (``N`` about ``n``).

- Pooling: adjacent bins are merged left to right until the smaller sample's
  expected count, ``min(n, N) * r_k / N``, reaches ``min_expected``; a short
  tail joins the last group. The grouping depends only on the reference and
  the sizes, never on the live counts, so it does not bias the test. Bins the
  reference never reached (below/above its range, empty tie bins) are merged
  into a neighbour rather than dropped: live values outside the reference
  range are the plainest sign of a new regime and must count as evidence.
- Pearson chi-square and the G-test on the resulting ``2 x G`` table with
  margins estimated from both samples, ``G - 1`` degrees of freedom; the G
  statistic is divided by Williams' correction, which brings its small-sample
  null distribution closer to chi-square.
- Binned Kolmogorov-Smirnov: ``D`` is the largest gap between the two
  cumulative bin proportions, ``sqrt(n_e) D`` with ``n_e = nN / (n + N)``
  (plus Stephens' finite-sample adjustment) is referred to the Kolmogorov
  law. Binning can only hide gaps (``D`` is a maximum over 17 points instead
  of every value) and ties make the statistic discrete, so the p-value is
  conservative: the false-alarm rate sits below the nominal level.
- Welch z on the means, with the normal tail (the reference side has large
  ``N``; at ``n = 80`` the z tail understates the t tail by ~20 % relative).
- Variance: ``log(s_l^2 / s_r^2)`` with ``Var(s^2) ~= sigma^4 (2/(n-1) +
  kappa/n)`` for each sample, ``kappa`` the excess kurtosis. ``kappa`` is
  pooled from both samples (weighted by size), because a live estimate from
  80 values is too noisy to scale a variance; each log variance is
  bias-corrected by half its variance (second-order delta method).
- Effect sizes: PSI (counts smoothed by 1/2, the industry convention);
  Jensen-Shannon distance in bits with the plug-in bias ``(B-1)(1/n + 1/N)/8``
  nats subtracted from the divergence before the square root, so a distance
  near 0 means "no shape change" at any sample size.

Invariants: inputs are validated non-negative count vectors of equal length;
functions return ``None`` when a test cannot be formed, never NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fleetcore.drift._distributions import chi2_sf, kolmogorov_sf, normal_two_sided
from fleetcore.stats import Moments

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


def pool_groups(reference: I64, n_live: int, min_expected: float) -> list[list[int]]:
    """Adjacent bin indices grouped so each group's smaller expected count >= ``min_expected``.

    Returns an empty list when even one group cannot reach the floor.
    """
    total = int(reference.sum())
    if total == 0 or n_live == 0:
        return []
    scale = min(n_live, total) / total
    groups: list[list[int]] = []
    current: list[int] = []
    mass = 0.0
    for k, count in enumerate(reference.tolist()):
        current.append(k)
        mass += count * scale
        if mass >= min_expected:
            groups.append(current)
            current, mass = [], 0.0
    if current:
        if not groups:
            return []
        groups[-1].extend(current)
    return groups


def pooled(counts: I64, groups: list[list[int]]) -> I64:
    return np.array([int(counts[g].sum()) for g in groups], dtype=np.int64)


@dataclass(frozen=True)
class BinTests:
    """Chi-square and G p-values on pooled bins, and their degrees of freedom."""

    p_chi2: float
    p_g: float
    df: int


def bin_tests(reference: I64, live: I64, min_expected: float) -> BinTests | None:
    """Two-sample Pearson chi-square and G-test; ``None`` with fewer than 2 groups."""
    groups = pool_groups(reference, int(live.sum()), min_expected)
    if len(groups) < 2:
        return None
    table = np.vstack([pooled(reference, groups), pooled(live, groups)]).astype(np.float64)
    rows = table.sum(axis=1, keepdims=True)
    cols = table.sum(axis=0, keepdims=True)
    grand = float(table.sum())
    keep = cols[0] > 0  # a group empty in both samples carries no information
    table, cols = table[:, keep], cols[:, keep]
    df = int(table.shape[1]) - 1
    if df < 1:
        return None
    expected = rows * cols / grand
    chi2 = float(((table - expected) ** 2 / expected).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(table > 0, table * np.log(table / expected), 0.0)
    g = 2.0 * float(terms.sum())
    # Williams (1976) for an r x c table: q = 1 + (N sum 1/rows - 1)(N sum 1/cols - 1)
    # / (6 N (r - 1)(c - 1)).
    q = 1.0 + (grand * float((1.0 / rows).sum()) - 1.0) * (
        grand * float((1.0 / cols).sum()) - 1.0
    ) / (6.0 * grand * df)
    return BinTests(p_chi2=chi2_sf(chi2, df), p_g=chi2_sf(max(g, 0.0) / q, df), df=df)


def ks_binned(reference: I64, live: I64) -> float | None:
    """Two-sample KS p-value on cumulative bin proportions (conservative for bins)."""
    n, m = int(live.sum()), int(reference.sum())
    if n == 0 or m == 0:
        return None
    gap = np.cumsum(live) / n - np.cumsum(reference) / m
    d = float(np.abs(gap).max())
    root = math.sqrt(n * m / (n + m))
    return kolmogorov_sf((root + 0.12 + 0.11 / root) * d)


def welch_mean(reference: Moments, live: Moments) -> float | None:
    """Two-sided Welch z p-value for equal means; ``None`` below 2 values a side."""
    if reference.n < 2 or live.n < 2:
        return None
    se2 = reference.variance() / reference.n + live.variance() / live.n
    delta = live.mean - reference.mean
    if se2 <= 0.0:
        # Both samples constant: equal means agree, different ones cannot.
        return 1.0 if delta == 0.0 else 0.0
    return normal_two_sided(delta / math.sqrt(se2))


def _kurtosis(m: Moments) -> float:
    k = m.excess_kurtosis()
    return 0.0 if math.isnan(k) else k


def log_variance_ratio(reference: Moments, live: Moments) -> float | None:
    """Two-sided p-value for equal variances from the kurtosis-aware log ratio."""
    if reference.n < 4 or live.n < 4:
        return None
    v_r, v_l = reference.variance(), live.variance()
    if v_r <= 0.0 or v_l <= 0.0:
        return 1.0 if v_r == v_l else 0.0
    kappa = (reference.n * _kurtosis(reference) + live.n * _kurtosis(live)) / (reference.n + live.n)
    # var(log s^2) ~= var(s^2) / sigma^4; kappa >= -2 keeps this positive.
    var_r = 2.0 / (reference.n - 1) + kappa / reference.n
    var_l = 2.0 / (live.n - 1) + kappa / live.n
    # E[log s^2] ~= log sigma^2 - var/2: correct both sides before differencing.
    z = (math.log(v_l) + var_l / 2.0 - math.log(v_r) - var_r / 2.0) / math.sqrt(var_r + var_l)
    return normal_two_sided(z)


def psi(reference: I64, live: I64) -> float:
    """Population stability index with half-count smoothing."""
    r = (reference + 0.5) / (reference.sum() + 0.5 * reference.size)
    q = (live + 0.5) / (live.sum() + 0.5 * live.size)
    return float(np.sum((q - r) * np.log(q / r)))


def js_distance(reference: I64, live: I64) -> float | None:
    """Bias-corrected Jensen-Shannon distance in bits (0 = same shape, 1 = disjoint)."""
    n, m = int(live.sum()), int(reference.sum())
    if n == 0 or m == 0:
        return None
    p = live / n
    q = reference / m
    mix = (p + q) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log(p / mix), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log(q / mix), 0.0).sum()
    divergence = 0.5 * float(kl_p + kl_q)
    occupied = int(np.count_nonzero(live + reference))
    divergence -= max(occupied - 1, 0) * (1.0 / n + 1.0 / m) / 8.0
    return math.sqrt(max(divergence, 0.0) / math.log(2.0))


__all__ = [
    "BinTests",
    "bin_tests",
    "js_distance",
    "ks_binned",
    "log_variance_ratio",
    "pool_groups",
    "pooled",
    "psi",
    "welch_mean",
]
