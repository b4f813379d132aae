"""Statistics shared by drift references and device summaries.

Theory of operation, moments: a :class:`Moments` holds the count ``n``, the
``mean``, the central moment sums ``m2 = sum (x - mean)^2``, ``m3`` and ``m4``,
and ``min``/``max``. A batch is summarized in two vectorized passes
(:meth:`Moments.of`); two summaries combine with the pairwise formulas of Chan,
Golub and LeVeque extended to third and fourth order by Pébay (Sandia report
SAND2008-6212), so devices summarize batch by batch and the control plane
merges windows in any order, equal to one pass up to rounding. When ``n == 0``
every sum is 0 and ``min``/``max`` are ``+inf``/``-inf`` (the identities of
merging), serialized as ``null``. Non-finite inputs are ignored here; callers
count them.

Binning: 17 equal-mass edges (the 0, 1/16, ..., 1 quantiles of the reference
values, numpy's linear interpolation) define 16 bins, plus two counters for
values below the first and above the last edge: counts are
``[below, bin 1, ..., bin 16, above]``. Bin ``k`` is ``[edge[k-1], edge[k])``
except the last, which is closed so the reference maximum (= the last edge) is
in range. Non-finite values are never binned.

Ties: when quantiles coincide (a discrete or constant feature), each repeated
edge is moved to the next float64 above its predecessor (``numpy.nextafter``).
Edges are then strictly increasing, the tied value's mass sits in the first bin
of the run, and the following bins are empty for the reference (expected count
zero, which drift tests skip). Canonical JSON writes floats in shortest
round-trip form, so such edges survive serialization exactly.

Output histograms use 20 equal-width bins on fixed ranges (:func:`output_ranges`);
values outside a range (rounding, unnormalized outputs) clip into the end bins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fleetcore._checks import finite_number
from fleetcore.errors import MetadataError

_FIELDS = ("n", "mean", "m2", "m3", "m4", "min", "max")
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Moments:
    """Count, mean, central moment sums M2..M4, minimum and maximum."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    m3: float = 0.0
    m4: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    @classmethod
    def of(cls, values: npt.ArrayLike) -> Moments:
        """Summarize the finite entries of ``values`` (any shape, flattened)."""
        x = np.asarray(values, dtype=np.float64).ravel()
        x = x[np.isfinite(x)]
        if x.size == 0:
            return cls()
        # Values near the float64 limit overflow the higher sums to inf/NaN;
        # that is reported by whoever serializes them, not warned about here.
        with np.errstate(over="ignore", invalid="ignore"):
            mean = float(x.mean())
            d = x - mean
            d2 = d * d
            m2, m3, m4 = float(d2.sum()), float((d2 * d).sum()), float((d2 * d2).sum())
        return cls(
            n=int(x.size),
            mean=mean,
            m2=m2,
            m3=m3,
            m4=m4,
            min=float(x.min()),
            max=float(x.max()),
        )

    def merge(self, other: Moments) -> Moments:
        """The moments of the union of both samples (Pébay's pairwise formulas)."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        na, nb = float(self.n), float(other.n)
        n = na + nb
        delta = other.mean - self.mean
        d_n = delta / n
        d_n2 = d_n * d_n
        cross = delta * d_n * na * nb  # delta^2 * na * nb / n
        m2 = self.m2 + other.m2 + cross
        m3 = (
            self.m3
            + other.m3
            + cross * d_n * (na - nb)
            + 3.0 * d_n * (na * other.m2 - nb * self.m2)
        )
        m4 = (
            self.m4
            + other.m4
            + cross * d_n2 * (na * na - na * nb + nb * nb)
            + 6.0 * d_n2 * (na * na * other.m2 + nb * nb * self.m2)
            + 4.0 * d_n * (na * other.m3 - nb * self.m3)
        )
        return Moments(
            n=self.n + other.n,
            mean=self.mean + d_n * nb,
            m2=m2,
            m3=m3,
            m4=m4,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
        )

    def update(self, values: npt.ArrayLike) -> Moments:
        """These moments merged with a new batch of values."""
        return self.merge(Moments.of(values))

    def variance(self, ddof: int = 1) -> float:
        """Variance with ``ddof`` delta degrees of freedom; NaN when undefined."""
        if self.n - ddof <= 0:
            return math.nan
        return self.m2 / (self.n - ddof)

    def skewness(self) -> float:
        """Population skewness ``g1``; NaN for fewer than 2 values or zero spread."""
        if self.n < 2 or self.m2 <= 0.0:
            return math.nan
        return math.sqrt(self.n) * self.m3 / math.pow(self.m2, 1.5)

    def excess_kurtosis(self) -> float:
        """Population excess kurtosis ``g2`` (0 for a normal distribution)."""
        if self.n < 2 or self.m2 <= 0.0:
            return math.nan
        return self.n * self.m4 / (self.m2 * self.m2) - 3.0

    def to_dict(self) -> dict[str, Any]:
        empty = self.n == 0
        return {
            "n": self.n,
            "mean": self.mean,
            "m2": self.m2,
            "m3": self.m3,
            "m4": self.m4,
            "min": None if empty else self.min,
            "max": None if empty else self.max,
        }

    @classmethod
    def from_dict(cls, obj: Any) -> Moments:
        """Parse and validate; raises MetadataError on any inconsistency."""
        if not isinstance(obj, dict):
            raise MetadataError("moments must be a JSON object")
        missing = [k for k in _FIELDS if k not in obj]
        if missing:
            raise MetadataError(f"moments lack {', '.join(missing)}")
        n = obj["n"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise MetadataError("moments n must be a non-negative integer")
        sums = {k: finite_number(obj[k], k) for k in ("mean", "m2", "m3", "m4")}
        if n == 0:
            if obj["min"] is not None or obj["max"] is not None or any(sums.values()):
                raise MetadataError("empty moments must have zero sums and null min/max")
            return cls()
        low, high = finite_number(obj["min"], "min"), finite_number(obj["max"], "max")
        if sums["m2"] < 0 or sums["m4"] < 0:
            raise MetadataError("moment sums m2 and m4 cannot be negative")
        if low > high:
            raise MetadataError("moments min exceeds max")
        return cls(n=n, min=low, max=high, **sums)


FEATURE_BINS = 16
FEATURE_EDGES = FEATURE_BINS + 1
#: Per-feature counts: below range, 16 bins, above range.
FEATURE_COUNTS = FEATURE_BINS + 2
OUTPUT_BINS = 20
HISTOGRAMS = ("entropy", "margin", "max_probability")
#: Rows binned at once by :func:`bin_counts_matrix` (bounds temporary memory).
_CHUNK_ROWS = 4096


# -- binning shared with devices ------------------------------------------


def quantile_edges(values: npt.ArrayLike) -> F64:
    """17 strictly increasing equal-mass edges of the finite ``values``."""
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise MetadataError("cannot place bin edges without finite values")
    edges = np.quantile(x, np.linspace(0.0, 1.0, FEATURE_EDGES)).astype(np.float64)
    for i in range(1, FEATURE_EDGES):
        if edges[i] <= edges[i - 1]:
            edges[i] = np.nextafter(edges[i - 1], np.inf)
    return edges


def check_edges(edges: npt.ArrayLike) -> F64:
    """``edges`` as float64, or MetadataError unless finite and strictly increasing."""
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        raise MetadataError("bin edges must be finite and strictly increasing")
    return e


def bin_counts(values: npt.ArrayLike, edges: npt.ArrayLike) -> I64:
    """Counts ``[below, bin 1..len(edges)-1, above]`` of the finite ``values``.

    With the 17 edges of a reference feature this is 18 counts.
    """
    e = check_edges(edges)
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    idx = np.searchsorted(e, x, side="right")
    idx[x == e[-1]] = e.size - 1  # the last bin is closed on the right
    return np.bincount(idx, minlength=e.size + 1).astype(np.int64)


def bin_counts_matrix(values: npt.ArrayLike, edges: npt.ArrayLike) -> I64:
    """Vectorized :func:`bin_counts` for every column: ``[n, F]`` x ``[F, E]`` -> ``[F, E+1]``."""
    x = np.asarray(values, dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    if x.ndim != 2 or e.ndim != 2 or x.shape[1] != e.shape[0]:
        raise MetadataError(f"values {x.shape} and edges {e.shape} do not line up")
    for row in e:
        check_edges(row)
    features, n_edges = e.shape
    offsets = (np.arange(features) * (n_edges + 1))[None, :]
    total = np.zeros(features * (n_edges + 1), dtype=np.int64)
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        chunk = x[start : start + _CHUNK_ROWS]
        idx = (chunk[:, :, None] >= e[None, :, :]).sum(axis=2)
        idx[chunk == e[None, :, -1]] = n_edges - 1
        flat = (idx + offsets)[np.isfinite(chunk)]
        total += np.bincount(flat, minlength=total.size).astype(np.int64)
    return total.reshape(features, n_edges + 1)


def output_ranges(n_classes: int) -> dict[str, tuple[float, float]]:
    """The fixed histogram range of each output statistic for ``n_classes``."""
    if n_classes < 2:
        raise MetadataError("a classifier needs at least two classes")
    return {
        "entropy": (0.0, math.log(n_classes)),
        "margin": (0.0, 1.0),
        "max_probability": (1.0 / n_classes, 1.0),
    }


def output_statistics(probabilities: npt.ArrayLike) -> dict[str, F64]:
    """Per-row max probability, entropy (nats) and top-1 minus top-2 margin."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise MetadataError("probabilities must be [n, K] with K >= 2")
    top2 = np.sort(p, axis=1)[:, -2:]
    safe = np.clip(p, 1e-300, None)
    entropy = -np.sum(np.where(p > 0, p * np.log(safe), 0.0), axis=1)
    return {"entropy": entropy, "margin": top2[:, 1] - top2[:, 0], "max_probability": top2[:, 1]}


def histogram(values: npt.ArrayLike, low: float, high: float, bins: int = OUTPUT_BINS) -> I64:
    """Equal-width counts on ``[low, high]``; outside values clip, non-finite are dropped."""
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise MetadataError("histogram range must be finite with low < high")
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    idx = np.clip(np.floor((x - low) / (high - low) * bins), 0, bins - 1).astype(np.int64)
    return np.bincount(idx, minlength=bins).astype(np.int64)


def output_histograms(probabilities: npt.ArrayLike) -> dict[str, I64]:
    """The three 20-bin output histograms of a batch of probability rows."""
    p = np.asarray(probabilities, dtype=np.float64)
    stats = output_statistics(p)
    ranges = output_ranges(p.shape[1])
    return {name: histogram(stats[name], *ranges[name]) for name in HISTOGRAMS}


__all__ = [
    "FEATURE_BINS",
    "FEATURE_COUNTS",
    "FEATURE_EDGES",
    "HISTOGRAMS",
    "OUTPUT_BINS",
    "Moments",
    "bin_counts",
    "bin_counts_matrix",
    "check_edges",
    "histogram",
    "output_histograms",
    "output_ranges",
    "output_statistics",
    "quantile_edges",
]
