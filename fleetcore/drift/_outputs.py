"""Output drift: a candidate release's outputs against a baseline's on the same cohort.

Theory of operation: the rollout quality gate has, for the previous release
(baseline) and the candidate, the predicted-class counts and the three 20-bin
output histograms over the same devices. Both sides are finite samples of
similar size, which is why every test here is two-sample. Three tests:

- class distribution: two-sample chi-square on class counts, sparse classes
  pooled (adjacent in class order) to ``min_expected`` expected predictions;
- confidence distribution: two-sample chi-square on the max-probability
  histogram, pooled the same way;
- mean confidence: Welch z on the mean max-probability, each sample's mean
  and variance computed from its histogram's bin midpoints (the binning error,
  at most half a bin, is the same on both sides and cancels in the difference).

They are combined by the Cauchy combination test into one p-value, compared
with ``alpha`` (one comparison, so no multiplicity adjustment). The result is
material when the mean confidence moved by ``min_confidence_shift`` or either
bias-corrected Jensen-Shannon distance reached ``min_js_distance``.

Invariants: pure; inputs of the wrong shape or negative counts raise
``ValueError``; p-values are ``None`` when a test cannot be formed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fleetcore.drift import _two_sample as ts
from fleetcore.drift._distributions import cauchy_combination, normal_two_sided
from fleetcore.drift._policy import DetectionPolicy, counts_array
from fleetcore.stats import HISTOGRAMS, OUTPUT_BINS, output_ranges

_MAX_PROBABILITY = HISTOGRAMS.index("max_probability")


@dataclass(frozen=True)
class OutputResult:
    """Output comparison of a live (candidate) sample with a baseline sample."""

    n_baseline: int
    n_live: int
    testable: bool
    reason: str
    p_classes: float | None
    p_confidence: float | None
    p_mean_confidence: float | None
    p: float | None
    confidence_baseline: float | None
    confidence_live: float | None
    confidence_shift: float | None
    js_classes: float | None
    js_confidence: float | None
    significant: bool
    material: bool
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _confidence(hist: npt.NDArray[np.int64], mids: npt.NDArray[np.float64]) -> tuple[float, float]:
    n = int(hist.sum())
    mean = float((hist * mids).sum() / n)
    var = float((hist * (mids - mean) ** 2).sum() / max(n - 1, 1))
    return mean, var


def test_outputs(
    baseline_class_counts: npt.ArrayLike,
    baseline_hists: npt.ArrayLike,
    live_class_counts: npt.ArrayLike,
    live_hists: npt.ArrayLike,
    policy: DetectionPolicy | None = None,
) -> OutputResult:
    """Compare live outputs with a baseline's: class mix and confidence.

    Histograms are ``[3, 20]`` in :data:`fleetcore.stats.HISTOGRAMS` order;
    class counts have one entry per class (``K >= 2``), the same on both sides.

    Raises:
        ValueError: shapes disagree or counts are negative or not integers.
    """
    policy = policy or DetectionPolicy()
    base_classes = np.asarray(baseline_class_counts)
    if base_classes.ndim != 1 or base_classes.size < 2:
        raise ValueError("class counts must be a vector of at least two classes")
    k = int(base_classes.size)
    b_cls = counts_array(base_classes, (k,), "baseline class counts")
    l_cls = counts_array(live_class_counts, (k,), "live class counts")
    shape = (len(HISTOGRAMS), OUTPUT_BINS)
    b_conf = counts_array(baseline_hists, shape, "baseline histograms")[_MAX_PROBABILITY]
    l_conf = counts_array(live_hists, shape, "live histograms")[_MAX_PROBABILITY]
    n_base, n_live = int(b_cls.sum()), int(l_cls.sum())
    if int(b_conf.sum()) != n_base or int(l_conf.sum()) != n_live:
        raise ValueError("max-probability histogram and class counts disagree on n")

    low, high = output_ranges(k)["max_probability"]
    step = (high - low) / OUTPUT_BINS
    mids = low + step * (np.arange(OUTPUT_BINS, dtype=np.float64) + 0.5)
    conf_b = conf_l = shift = None
    p_classes = p_conf = p_mean = p = None
    js_classes = js_conf = None
    if n_base and n_live:
        (conf_b, var_b), (conf_l, var_l) = _confidence(b_conf, mids), _confidence(l_conf, mids)
        shift = conf_l - conf_b
        js_classes = ts.js_distance(b_cls, l_cls)
        js_conf = ts.js_distance(b_conf, l_conf)
    if min(n_base, n_live) < policy.min_n:
        reason = f"{n_base} baseline and {n_live} live outputs; each needs min_n={policy.min_n}"
    else:
        assert conf_b is not None and conf_l is not None
        cls_tests = ts.bin_tests(b_cls, l_cls, policy.min_expected)
        conf_tests = ts.bin_tests(b_conf, l_conf, policy.min_expected)
        p_classes = None if cls_tests is None else cls_tests.p_chi2
        p_conf = None if conf_tests is None else conf_tests.p_chi2
        se2 = var_b / n_base + var_l / n_live
        delta = conf_l - conf_b
        p_mean = normal_two_sided(delta / math.sqrt(se2)) if se2 > 0 else float(delta == 0)
        p = cauchy_combination([v for v in (p_classes, p_conf, p_mean) if v is not None])
        reason = "tested"
    significant = p is not None and p <= policy.alpha
    material = (
        (shift is not None and abs(shift) >= policy.min_confidence_shift)
        or (js_classes is not None and js_classes >= policy.min_js_distance)
        or (js_conf is not None and js_conf >= policy.min_js_distance)
    )
    return OutputResult(
        n_baseline=n_base,
        n_live=n_live,
        testable=p is not None,
        reason=reason,
        p_classes=p_classes,
        p_confidence=p_conf,
        p_mean_confidence=p_mean,
        p=p,
        confidence_baseline=conf_b,
        confidence_live=conf_l,
        confidence_shift=shift,
        js_classes=js_classes,
        js_confidence=js_conf,
        significant=significant,
        material=material,
        drifted=significant and material,
    )


__all__ = ["OutputResult", "test_outputs"]
