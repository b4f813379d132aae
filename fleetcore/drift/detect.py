"""Fleet drift detection: is live data different from the reference, and does it matter?

Theory of operation. For each input feature, merged live counts (18 bins) and
moments are compared with the release's :class:`~fleetcore.drift.DriftReference`
by four two-sample tests (:mod:`fleetcore.drift._two_sample` has the details):
Pearson chi-square on pooled bins (the G-test is computed alongside for
reference), binned Kolmogorov-Smirnov, Welch z on the mean and a
kurtosis-aware log-variance test. The reference is a finite sample too, so
every test is two-sample: with ``N = 20 000`` reference rows and ``n = 2 000``
live ones, treating the reference as exact would understate the noise by 10 %.

Combination. The four p-values of a feature are combined by the Cauchy
combination test, weighted 1/6 (chi-square), 1/6 (KS), 1/2 (mean) and 1/6
(variance): sensor offsets are the commonest drift and the Welch test is the
most powerful against them. It is valid for dependent tests at the small
levels alarms use, loses nothing when the tests agree (a mean shift moves the
mean, KS and chi-square tests together, and Bonferroni would multiply by 4),
and still lets a single sharp test carry the decision (a variance change moves
only the variance test; the combined p is then about 6 times that p-value, a
mean shift alone about 2 times). Across features, Benjamini-Hochberg q-values control the
false-discovery rate at ``alpha``; untestable features take no part.

Materiality. With enough data every tiny shift is significant, so a feature
*drifts* only when it is significant (``q <= alpha``) and material: the mean
moved by at least ``min_mean_shift_sd`` reference standard deviations, the
standard deviation ratio left ``sd_ratio_band``, or the bias-corrected
Jensen-Shannon distance on the bins reached ``min_js_distance``.

Testability. A feature with fewer than ``min_n`` finite live values, or whose
bins cannot be pooled into two groups of ``min_expected`` expected values, is
reported ``testable=False`` with a reason: the caller keeps merging windows
until it is. :func:`persistent` turns per-window flags into an alarm that needs
``k`` of the last ``m`` windows.

Invariants: results are pure functions of their inputs; p- and q-values are in
``[0, 1]`` or ``None`` (test not formed); inputs of the wrong shape, negative
counts or counts that disagree with the moments raise ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from fleetcore.drift import _two_sample as ts
from fleetcore.drift._distributions import cauchy_combination
from fleetcore.drift._outputs import OutputResult, test_outputs
from fleetcore.drift._policy import DetectionPolicy, counts_array
from fleetcore.drift.reference import DriftReference, FeatureReference
from fleetcore.stats import FEATURE_COUNTS, Moments

#: Test names in the order of :attr:`FeatureResult.p_values`.
TESTS = ("chi2", "g", "ks", "mean", "variance")
#: The tests the combined p-value uses (the G-test duplicates chi-square).
COMBINED_TESTS = ("chi2", "ks", "mean", "variance")
#: Their weights in the Cauchy combination: sensor offsets (mean shifts) are the
#: commonest drift and the Welch test is the most powerful against them, so it
#: weighs as much as the three others together.
_WEIGHTS = (0.5 / 3, 0.5 / 3, 0.5, 0.5 / 3)


@dataclass(frozen=True)
class FeatureResult:
    """Tests, effect sizes and verdict for one feature.

    p-values are ``None`` when that test could not be formed; ``q`` is ``None``
    for untestable features. ``mean_shift_sd`` is signed (live minus
    reference, in reference standard deviations; ``inf`` only when a constant
    reference feature moved). ``js`` is the bias-corrected Jensen-Shannon
    distance in bits; ``psi`` the population stability index.
    """

    name: str
    n: int
    testable: bool
    reason: str
    p_chi2: float | None
    p_g: float | None
    p_ks: float | None
    p_mean: float | None
    p_var: float | None
    p: float | None
    q: float | None
    psi: float | None
    js: float | None
    mean_shift_sd: float | None
    sd_ratio: float | None
    significant: bool
    material: bool
    drifted: bool

    @property
    def p_values(self) -> dict[str, float | None]:
        return dict(
            zip(TESTS, (self.p_chi2, self.p_g, self.p_ks, self.p_mean, self.p_var), strict=True)
        )

    @property
    def strongest_test(self) -> str | None:
        """The combined test with the smallest p-value (evidence for an alarm)."""
        found = [(p, t) for t, p in self.p_values.items() if p is not None and t != "g"]
        return min(found)[1] if found else None

    @property
    def effect(self) -> float | None:
        """The effect size that belongs to :attr:`strongest_test`."""
        test = self.strongest_test
        if test == "mean":
            return self.mean_shift_sd
        if test == "variance":
            return self.sd_ratio
        return self.js if test is not None else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields plus ``test`` and ``effect``."""
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return {**fields, "test": self.strongest_test, "effect": self.effect}


def benjamini_hochberg(p: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values), in the input order."""
    values = np.asarray(list(p), dtype=np.float64)
    if values.ndim != 1 or np.any(np.isnan(values)) or np.any((values < 0) | (values > 1)):
        raise ValueError("p-values must be a flat sequence of numbers in [0, 1]")
    m = values.size
    if m == 0:
        return []
    order = np.argsort(values, kind="stable")
    scaled = values[order] * m / np.arange(1, m + 1)
    # Step-up: each q is the smallest scaled p at or above its rank.
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    q = np.empty(m, dtype=np.float64)
    q[order] = np.minimum(adjusted, 1.0)
    return [float(v) for v in q]


def persistent(flags: Sequence[bool], k: int = 3, m: int = 4) -> bool:
    """True when at least ``k`` of the last ``m`` window flags are set."""
    if not 1 <= k <= m:
        raise ValueError(f"persistence needs 1 <= k <= m, got k={k}, m={m}")
    return sum(bool(f) for f in list(flags)[-m:]) >= k


def _effects(
    ref_counts: npt.NDArray[np.int64], live: npt.NDArray[np.int64], ref: Moments, cur: Moments
) -> tuple[float | None, float | None, float | None, float | None]:
    if cur.n == 0:
        return None, None, None, None
    psi = ts.psi(ref_counts, live)
    js = ts.js_distance(ref_counts, live)
    sd_r = math.sqrt(ref.variance()) if ref.n > 1 else 0.0
    sd_l = math.sqrt(cur.variance()) if cur.n > 1 else 0.0
    delta = cur.mean - ref.mean
    scale = sd_r if sd_r > 0 else sd_l
    shift = delta / scale if scale > 0 else (0.0 if delta == 0 else math.copysign(math.inf, delta))
    ratio = sd_l / sd_r if sd_r > 0 and cur.n > 1 else None
    return psi, js, shift, ratio


def _material(
    policy: DetectionPolicy, js: float | None, shift: float | None, ratio: float | None
) -> bool:
    low, high = policy.sd_ratio_band
    return (
        (shift is not None and abs(shift) >= policy.min_mean_shift_sd)
        or (ratio is not None and not low <= ratio <= high)
        or (js is not None and js >= policy.min_js_distance)
    )


def test_features(
    reference: DriftReference,
    counts: npt.ArrayLike,
    moments: Sequence[Moments],
    policy: DetectionPolicy | None = None,
) -> list[FeatureResult]:
    """Test every feature's live ``counts`` ``[F, 18]`` and ``moments`` against ``reference``.

    Raises:
        ValueError: ``counts`` is not ``[F, 18]`` non-negative integers, there is
            not one :class:`Moments` per feature, or a feature's counts do not
            sum to its moments' ``n`` (both count the finite values).
    """
    policy = policy or DetectionPolicy()
    features = reference.features
    live = counts_array(counts, (len(features), FEATURE_COUNTS), "feature counts")
    if len(moments) != len(features):
        raise ValueError(f"need {len(features)} moments, got {len(moments)}")
    staged = [_test_one(feature, live[i], moments[i], policy) for i, feature in enumerate(features)]
    tested = [i for i, r in enumerate(staged) if r.p is not None]
    q_values = benjamini_hochberg([staged[i].p or 0.0 for i in tested])
    for i, q in zip(tested, q_values, strict=True):
        significant = q <= policy.alpha
        staged[i] = replace(
            staged[i], q=q, significant=significant, drifted=significant and staged[i].material
        )
    return staged


def _test_one(
    feature: FeatureReference, row: npt.NDArray[np.int64], cur: Moments, policy: DetectionPolicy
) -> FeatureResult:
    """One feature's tests and effects; ``q`` and the verdict wait for BH."""
    if int(row.sum()) != cur.n:
        raise ValueError(
            f"feature {feature.name!r}: counts sum to {int(row.sum())} but moments have n={cur.n}"
        )
    ref_counts = np.asarray(feature.counts, dtype=np.int64)
    psi, js, shift, ratio = _effects(ref_counts, row, feature.moments, cur)
    p_chi2 = p_g = p_ks = p_mean = p_var = p = None
    if cur.n < policy.min_n:
        reason = f"{cur.n} live values, fewer than min_n={policy.min_n}"
    else:
        bins = ts.bin_tests(ref_counts, row, policy.min_expected)
        if bins is not None:
            p_chi2, p_g = bins.p_chi2, bins.p_g
        p_ks = ts.ks_binned(ref_counts, row)
        p_mean = ts.welch_mean(feature.moments, cur)
        p_var = ts.log_variance_ratio(feature.moments, cur)
        tests = (p_chi2, p_ks, p_mean, p_var)
        found = [(v, w) for v, w in zip(tests, _WEIGHTS, strict=True) if v is not None]
        p = cauchy_combination([v for v, _ in found], [w for _, w in found]) if found else None
        reason = (
            "tested"
            if bins is not None
            else f"tested without bin tests: bins do not pool into 2 groups of "
            f"{policy.min_expected:g} expected values"
        )
    return FeatureResult(
        name=feature.name,
        n=cur.n,
        testable=p is not None,
        reason=reason,
        p_chi2=p_chi2,
        p_g=p_g,
        p_ks=p_ks,
        p_mean=p_mean,
        p_var=p_var,
        p=p,
        q=None,
        psi=psi,
        js=js,
        mean_shift_sd=shift,
        sd_ratio=ratio,
        significant=False,
        material=_material(policy, js, shift, ratio),
        drifted=False,
    )


# Names that start with ``test_`` would be collected by pytest wherever they are
# imported; they are library functions, not tests.
for _function in (test_features, test_outputs):
    setattr(_function, "__test__", False)  # noqa: B010

__all__ = [
    "COMBINED_TESTS",
    "TESTS",
    "DetectionPolicy",
    "FeatureResult",
    "OutputResult",
    "benjamini_hochberg",
    "persistent",
    "test_features",
    "test_outputs",
]
