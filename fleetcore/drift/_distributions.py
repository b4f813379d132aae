"""Tail probabilities the drift tests need, in pure Python (no SciPy at run time).

Theory of operation:

- chi-square: ``P(X > x) = Q(df/2, x/2)``, the regularized upper incomplete
  gamma function, evaluated by its power series for ``P`` when ``x < a + 1``
  (where ``Q`` is not small, so ``1 - P`` keeps full relative precision) and by
  the Legendre continued fraction for ``Q`` otherwise (modified Lentz), both
  with the prefactor ``x^a e^-x / Gamma(a)`` taken in log space so that tails
  down to ~1e-300 keep their relative precision.
- normal: ``0.5 * erfc(z / sqrt 2)``, exact in the tail where ``1 - Phi``
  would cancel.
- Kolmogorov (the limit law of ``sqrt(n) * D_n``): the alternating series
  ``2 sum (-1)^(k-1) exp(-2 k^2 x^2)`` for ``x >= 1`` and, below, the Jacobi
  theta form of the CDF ``sqrt(2 pi)/x sum exp(-(2k-1)^2 pi^2 / (8 x^2))``;
  each converges in a few terms in its own range.
- Cauchy combination (Liu and Xie 2020): ``T = mean tan((1/2 - p_i) pi)``
  is standard Cauchy when the p-values are independent *or* perfectly
  dependent, and its tail stays close to that for arbitrary dependence at the
  small levels drift alarms use; ``tan((1/2 - p) pi)`` is written as
  ``1 / tan(p pi)`` so that tiny p-values keep their precision.

Invariants: every function returns a probability in ``[0, 1]``; arguments
outside the domain raise ``ValueError``; ``NaN`` is refused, never propagated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

_EPS = 1e-16
_TINY = 1e-300
_MAX_TERMS = 10_000


def _check(value: float, what: str) -> float:
    if math.isnan(value):
        raise ValueError(f"{what} is NaN")
    return value


def gamma_q(a: float, x: float) -> float:
    """Regularized upper incomplete gamma ``Q(a, x) = Gamma(a, x) / Gamma(a)``."""
    if not a > 0 or math.isinf(a):
        raise ValueError(f"gamma shape must be positive and finite, got {a}")
    _check(x, "gamma argument")
    if x <= 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    log_prefactor = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        # P(a, x) = x^a e^-x / Gamma(a + 1) * sum x^k / ((a + 1) ... (a + k)).
        term = total = 1.0 / a
        denominator = a
        for _ in range(_MAX_TERMS):
            denominator += 1.0
            term *= x / denominator
            total += term
            if abs(term) < abs(total) * _EPS:
                break
        return min(1.0, max(0.0, 1.0 - total * math.exp(log_prefactor)))
    # Q(a, x) = x^a e^-x / Gamma(a) * 1 / (x + 1 - a - 1 (1 - a) / (x + 3 - a - ...)).
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_TERMS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return min(1.0, max(0.0, math.exp(log_prefactor) * h))


def chi2_sf(x: float, df: float) -> float:
    """``P(X > x)`` for a chi-square variable with ``df`` degrees of freedom."""
    if not df > 0:
        raise ValueError(f"chi-square degrees of freedom must be positive, got {df}")
    return gamma_q(df / 2.0, _check(x, "chi-square statistic") / 2.0)


def normal_sf(z: float) -> float:
    """``P(Z > z)`` for a standard normal variable."""
    return 0.5 * math.erfc(_check(z, "normal statistic") / math.sqrt(2.0))


def normal_two_sided(z: float) -> float:
    """``P(|Z| >= |z|)`` for a standard normal variable."""
    return min(1.0, math.erfc(abs(_check(z, "normal statistic")) / math.sqrt(2.0)))


def normal_quantile(p: float) -> float:
    """The ``p`` quantile of the standard normal (Acklam's rational start + Newton)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"normal quantile needs 0 < p < 1, got {p}")
    # A bisection-free inverse: start from the logistic-ish approximation and
    # polish with Newton steps on erfc, which converges quadratically.
    q = min(p, 1.0 - p)
    t = math.sqrt(-2.0 * math.log(q))
    z = t - (2.515517 + 0.802853 * t + 0.010328 * t * t) / (
        1.0 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t**3
    )
    for _ in range(50):
        err = normal_sf(z) - q
        step = err / (math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi))
        z += step
        if abs(step) < 1e-15 * max(1.0, abs(z)):
            break
    return z if p > 0.5 else -z


def kolmogorov_sf(x: float) -> float:
    """``P(K > x)`` for the Kolmogorov distribution (``sqrt(n) D_n`` as n grows)."""
    _check(x, "Kolmogorov statistic")
    if x <= 0.0:
        return 1.0
    if x < 1.0:
        # Below ~0.18 the CDF underflows to 0 and the tail is 1.
        s = 0.0
        for k in range(1, 101):
            term = math.exp(-((2 * k - 1) ** 2) * math.pi**2 / (8.0 * x * x))
            s += term
            if term < _EPS * s or s == 0.0:
                break
        return min(1.0, max(0.0, 1.0 - math.sqrt(2.0 * math.pi) / x * s))
    s = 0.0
    for k in range(1, 101):
        term = math.exp(-2.0 * k * k * x * x)
        s += term if k % 2 else -term
        if term < _EPS * abs(s):
            break
    return min(1.0, max(0.0, 2.0 * s))


def cauchy_combination(p_values: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """Combine p-values by the Cauchy combination test (equal weights unless given).

    Weights are non-negative and normalized to sum to 1 (Liu and Xie, 2020).
    """
    if not p_values:
        raise ValueError("need at least one p-value to combine")
    if weights is None:
        weights = [1.0] * len(p_values)
    if len(weights) != len(p_values) or any(not w >= 0.0 for w in weights) or sum(weights) <= 0:
        raise ValueError("need one non-negative weight per p-value, not all zero")
    scale = 1.0 / sum(weights)
    total = 0.0
    for p, w in zip(p_values, weights, strict=True):
        if not 0.0 <= _check(p, "p-value") <= 1.0:
            raise ValueError(f"p-values must lie in [0, 1], got {p}")
        if p == 0.0:
            return 0.0
        # tan((1/2 - p) pi) = 1 / tan(p pi); p = 1 maps to a large negative value
        # and p below 1e-300 (subnormal) counts as 1e-300 so the sum cannot overflow.
        total += w * scale / math.tan(min(max(p, _TINY), 1.0 - 1e-15) * math.pi)
    t = total
    if t > 0.0:
        # 1/2 - atan(t)/pi = atan(1/t)/pi: no cancellation for large t.
        return min(1.0, math.atan(1.0 / t) / math.pi)
    return min(1.0, 0.5 - math.atan(t) / math.pi)


__all__ = [
    "cauchy_combination",
    "chi2_sf",
    "gamma_q",
    "kolmogorov_sf",
    "normal_quantile",
    "normal_sf",
    "normal_two_sided",
]
