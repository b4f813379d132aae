"""The drift detection policy and input checks shared by feature and output tests.

Invariants: a :class:`DetectionPolicy` is valid once constructed (every
threshold in range, checked in ``__post_init__``); :func:`counts_array`
returns a read-only int64 copy of the expected shape or raises ``ValueError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class DetectionPolicy:
    """Significance, testability and materiality thresholds (see docs/drift.md).

    Attributes:
        alpha: false-discovery rate across features (Benjamini-Hochberg), and
            the level of the single combined test on outputs.
        min_n: live values a feature (or each output sample) needs before it
            is tested at all; below it the caller keeps merging windows.
        min_expected: floor on the expected count of every pooled bin.
        min_mean_shift_sd: a mean shift of at least this many reference
            standard deviations is material.
        sd_ratio_band: a live/reference standard deviation ratio outside this
            closed interval is material.
        min_js_distance: a bias-corrected Jensen-Shannon distance (bits) on
            the bins at or above this is material.
        min_confidence_shift: outputs only: a change of mean max-probability
            at least this large (absolute, 0..1) is material.
    """

    alpha: float = 0.01
    min_n: int = 50
    min_expected: float = 5.0
    min_mean_shift_sd: float = 0.05
    sd_ratio_band: tuple[float, float] = (0.8, 1.25)
    min_js_distance: float = 0.05
    min_confidence_shift: float = 0.02

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if isinstance(self.min_n, bool) or not isinstance(self.min_n, int) or self.min_n < 2:
            raise ValueError(f"min_n must be an integer >= 2, got {self.min_n}")
        if not (math.isfinite(self.min_expected) and self.min_expected > 0.0):
            raise ValueError(f"min_expected must be positive, got {self.min_expected}")
        low, high = self.sd_ratio_band
        if not 0.0 < low <= 1.0 <= high < math.inf:
            raise ValueError(f"sd_ratio_band must satisfy 0 < low <= 1 <= high, got {low, high}")
        for name in ("min_mean_shift_sd", "min_js_distance", "min_confidence_shift"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be a non-negative number, got {value}")


def counts_array(values: npt.ArrayLike, shape: tuple[int, ...], what: str) -> npt.NDArray[np.int64]:
    """``values`` as a read-only int64 array of ``shape``; ``ValueError`` otherwise."""
    raw = np.asarray(values)
    if raw.shape != shape:
        raise ValueError(f"{what} must have shape {list(shape)}, got {list(raw.shape)}")
    exact_floats = (
        raw.dtype.kind == "f"
        and bool(np.all(np.isfinite(raw)))
        and bool(np.all(raw == np.round(raw)))
    )
    if raw.dtype.kind not in "iu" and not exact_floats:
        raise ValueError(f"{what} must be integer counts")
    out = raw.astype(np.int64)
    if np.any(out < 0):
        raise ValueError(f"{what} cannot be negative")
    out.setflags(write=False)
    return out


__all__ = ["DetectionPolicy", "counts_array"]
