"""Label-free accuracy estimate (binned confidence-based performance estimation).

Theory of operation. The reference's :class:`~fleetcore.drift.AccuracyTable`
records, per max-probability bin ``b``, how many reference predictions fell in
the bin (``c_b``) and how many were right (``r_b``). Under covariate shift that
leaves ``P(correct | confidence)`` unchanged, the live accuracy is

    A = sum_b w_b a_b,   w_b = live share of bin b,   a_b = accuracy within bin b.

``a_b`` is estimated by the posterior mean of a Beta prior worth
``PRIOR_STRENGTH`` predictions centred on the bin's mid confidence (what a
calibrated model would score), updated with ``r_b`` of ``c_b``: bins the
reference barely reached lean on calibration, well-filled bins on data.

The interval is a delta-method normal interval around the estimate with two
independent variance terms, so it covers the accuracy of the live *population*
the window was drawn from:

- live sampling: the bin shares are multinomial, so ``Var = (sum_b w_b a_b^2 -
  A^2) / n`` (the spread of ``a_b`` across bins, scaled by ``1/n``);
- reference uncertainty: ``sum_b w_b^2 a_b (1 - a_b) / (c_b + s + 1)``, the
  Beta posterior variance of each ``a_b`` (``s`` the prior strength).

What it does not cover: a shift that changes ``P(correct | confidence)``
(concept drift, or inputs so new that the model is confidently wrong). That is
why detection of input drift runs alongside, and why labels, when a device has
them, replace the estimate: with at least ``min_labelled`` labelled
predictions the result is the observed accuracy with a Wilson score interval
(``labelled=True``). Labelled feedback can be a biased sample (users report
mistakes more often than successes), so the threshold is a policy choice.

Invariants: pure; returns ``None`` when there is nothing to estimate (no
accuracy table and too few labels, or an empty histogram); ``0 <= low <=
value <= high <= 1``; malformed inputs raise ``ValueError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fleetcore.drift._distributions import normal_quantile
from fleetcore.drift._policy import counts_array
from fleetcore.drift.reference import DriftReference
from fleetcore.stats import OUTPUT_BINS

#: Pseudo-predictions of the calibrated prior in each bin.
PRIOR_STRENGTH = 2.0


@dataclass(frozen=True)
class AccuracyEstimate:
    """An accuracy with its interval; ``method`` is ``"cbpe"`` or ``"wilson"``.

    ``n`` is the number of live predictions behind the estimate (labelled
    ones when ``labelled``).
    """

    value: float
    low: float
    high: float
    n: int
    labelled: bool
    method: str


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError("need 0 <= successes <= trials and trials > 0")
    z = normal_quantile(0.5 + confidence / 2.0)
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2.0 * trials)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / trials + z * z / (4.0 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def bin_accuracies(
    reference: DriftReference,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """Per max-probability bin: posterior mean accuracy and its posterior variance."""
    table = reference.accuracy
    if table is None:
        return None
    count = np.asarray(table.count, dtype=np.float64)
    correct = np.asarray(table.correct, dtype=np.float64)
    mids = reference.output.max_probability.midpoints()
    strength = count + PRIOR_STRENGTH
    mean = (correct + PRIOR_STRENGTH * mids) / strength
    variance = mean * (1.0 - mean) / (strength + 1.0)
    return mean, variance


def estimate_accuracy(
    reference: DriftReference,
    max_probability_counts: npt.ArrayLike,
    labelled: npt.ArrayLike | None = None,
    correct: npt.ArrayLike | None = None,
    confidence: float = 0.95,
    *,
    min_labelled: int = 30,
) -> AccuracyEstimate | None:
    """Accuracy of live predictions: observed when labelled, else estimated.

    Args:
        reference: the release's drift reference (its accuracy table).
        max_probability_counts: live max-probability histogram, 20 bins.
        labelled: per bin, live predictions with a ground-truth label.
        correct: per bin, how many of those were right.
        confidence: interval coverage, in (0, 1).
        min_labelled: labelled predictions needed to report observed accuracy.

    Raises:
        ValueError: wrong shapes, negative counts, ``correct > labelled``,
            only one of ``labelled``/``correct``, or a bad ``confidence``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    live = counts_array(max_probability_counts, (OUTPUT_BINS,), "max-probability counts")
    if (labelled is None) != (correct is None):
        raise ValueError("labelled and correct come together")
    if labelled is not None and correct is not None:
        seen = counts_array(labelled, (OUTPUT_BINS,), "labelled counts")
        right = counts_array(correct, (OUTPUT_BINS,), "correct counts")
        if np.any(right > seen):
            raise ValueError("a bin has more correct than labelled predictions")
        total, hits = int(seen.sum()), int(right.sum())
        if total >= max(min_labelled, 1):
            low, high = wilson_interval(hits, total, confidence)
            return AccuracyEstimate(hits / total, low, high, total, True, "wilson")

    n = int(live.sum())
    accuracies = bin_accuracies(reference)
    if accuracies is None or n == 0:
        return None
    a, a_var = accuracies
    w = live / n
    value = float((w * a).sum())
    sampling = max(float((w * a * a).sum()) - value * value, 0.0) / n
    table = float((w * w * a_var).sum())
    half = normal_quantile(0.5 + confidence / 2.0) * math.sqrt(sampling + table)
    value = min(max(value, 0.0), 1.0)
    return AccuracyEstimate(value, max(0.0, value - half), min(1.0, value + half), n, False, "cbpe")


__all__ = ["PRIOR_STRENGTH", "AccuracyEstimate", "estimate_accuracy", "wilson_interval"]
