"""The invariants of :class:`~fleetcore.drift.summary.DriftCounts`, as checks.

Shared by the constructor (which raises ValueError) and the wire decoder
(which raises ProtocolError), so both refuse exactly the same bodies. Each
check returns what is wrong in words, or ``None``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from fleetcore.drift import _merge
from fleetcore.stats import HISTOGRAMS

if TYPE_CHECKING:
    from fleetcore.drift.summary import DriftCounts

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
#: Floats hold counts exactly up to 2**53; more samples than that is nonsense.
MAX_SAMPLES = 2**53


def invariant_problem(c: DriftCounts) -> str | None:
    """What breaks the :class:`DriftCounts` invariants, or ``None``."""
    n = int(sum(int(v) for v in c.class_counts))
    if n >= MAX_SAMPLES:
        return f"{n} samples in one window is more than {MAX_SAMPLES}"
    ints = (c.counts, c.nan, c.inf, c.class_counts, c.histograms, c.labelled, c.correct)
    if any(a.size and (a.min() < 0 or a.max() > MAX_SAMPLES) for a in ints):
        return f"counts must lie in 0..{MAX_SAMPLES}"
    finite = c.counts.sum(axis=1)
    bad = np.flatnonzero(finite + c.nan + c.inf != n)
    if bad.size:
        return f"feature {int(bad[0])} counts do not sum to the {n} samples of the window"
    sums = c.histograms.sum(axis=1)
    if np.any(sums != n):
        name = HISTOGRAMS[int(np.flatnonzero(sums != n)[0])]
        return f"{name} histogram does not sum to the {n} samples of the window"
    if np.any(c.correct > c.labelled):
        return "more correct predictions than labelled ones in a max-probability bin"
    return moments_problem(c.moments, finite)


def moments_problem(m: F64, finite: I64) -> str | None:
    """What is wrong with moment rows describing ``finite`` values per feature, or ``None``."""
    bad = np.flatnonzero(m[:, _merge.N] != finite)
    if bad.size:
        return f"feature {int(bad[0])} moments n differs from its binned count"
    empty = finite == 0
    if np.any(empty) and not np.array_equal(
        m[empty], _merge.empty_moments(int(empty.sum())), equal_nan=False
    ):
        return f"feature {int(np.flatnonzero(empty)[0])} has moments but no values"
    full = m[~empty]
    sums = full[:, _merge.MEAN : _merge.M4 + 1]
    known = np.isfinite(sums).all(axis=1)
    unknown = np.isnan(sums).all(axis=1)
    low, high = full[:, _merge.MIN], full[:, _merge.MAX]
    checks = (
        (known | unknown, "mean and moment sums must be all finite or all NaN"),
        (~known | ((sums[:, 1] >= 0) & (sums[:, 3] >= 0)), "M2 and M4 cannot be negative"),
        ((low <= high) & (low < math.inf) & (high > -math.inf), "min must not exceed max"),
    )
    where = np.flatnonzero(~empty)
    for ok, message in checks:
        if not ok.all():
            return f"feature {int(where[np.flatnonzero(~ok)[0]])}: {message}"
    return None
