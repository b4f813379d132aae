"""Vectorized kernels behind :mod:`fleetcore.drift.summary`.

Moments are rows ``[n, mean, m2, m3, m4, min, max]`` (the columns of
``DriftCounts.moments``); :func:`merge_moments` is the Chan/Pébay pairwise
merge of :meth:`fleetcore.stats.Moments.merge`, term for term, over any number
of leading axes, so one call merges every feature (or every pair of a tree
reduction). A side with ``n == 0`` is the identity and is returned as is, bit
for bit, rather than through the formulas (whose rounding would perturb the
other side's mean). A feature whose sums overflowed float64 (values beyond
about 1e77) carries NaN in ``mean``..``m4``: "unknown", never mistaken for data.

Binning (:class:`Binner`) gives exactly the counts of
:func:`fleetcore.stats.bin_counts_matrix` faster. It needs, per feature and
edge, how many values reach the edge, ``C[j, k] = #{x_j >= e_jk}``; bin ``k``
is then ``C[k-1] - C[k]``. The last bin is closed on the right: comparing
against the next float above the last edge counts exactly the values strictly
above it. The comparisons run over a ``[features, 17, rows]`` boolean block
whose rows axis is contiguous; it is summed eight bytes at a time as uint64
words (each byte lane holds one row's 0/1, so a lane reaches at most
``rows / 8``, kept under 256 by :data:`MAX_ROWS`), then the eight lanes are
added. NaN compares false and so pads a partial block for free; +inf reaches
every edge and is subtracted by the caller, which counts non-finite values apart.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fleetcore.stats import FEATURE_COUNTS, FEATURE_EDGES

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: Moment columns.
N, MEAN, M2, M3, M4, MIN, MAX = range(7)
#: Rows compared per block: a multiple of 8 whose lane sums stay below 256.
MAX_ROWS = 2040
#: Bytes of comparison results allowed per block (bounds temporary memory).
_BLOCK_BYTES = 1 << 19


def empty_moments(features: int) -> F64:
    """Moment rows of ``features`` empty samples (the identity of merging)."""
    m = np.zeros((features, 7), dtype=np.float64)
    m[:, MIN] = np.inf
    m[:, MAX] = -np.inf
    return m


def mark_overflow(m: F64) -> F64:
    """Set ``mean``..``m4`` to NaN (in place) wherever any of them is not finite."""
    bad = ~np.isfinite(m[..., MEAN : M4 + 1]).all(axis=-1)
    if bad.any():
        m[bad, MEAN : M4 + 1] = np.nan
    return m


def merge_moments(a: F64, b: F64) -> F64:
    """Moment rows of the union of the samples behind ``a`` and ``b`` (same shape)."""
    na, nb = a[..., N], b[..., N]
    n = na + nb
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        delta = b[..., MEAN] - a[..., MEAN]
        d_n = delta / n
        d_n2 = d_n * d_n
        cross = delta * d_n * na * nb  # delta^2 * na * nb / n
        m2a, m2b, m3a, m3b = a[..., M2], b[..., M2], a[..., M3], b[..., M3]
        out = np.empty_like(a)
        out[..., N] = n
        out[..., MEAN] = a[..., MEAN] + d_n * nb
        out[..., M2] = m2a + m2b + cross
        out[..., M3] = m3a + m3b + cross * d_n * (na - nb) + 3.0 * d_n * (na * m2b - nb * m2a)
        out[..., M4] = (
            a[..., M4]
            + b[..., M4]
            + cross * d_n2 * (na * na - na * nb + nb * nb)
            + 6.0 * d_n2 * (na * na * m2b + nb * nb * m2a)
            + 4.0 * d_n * (na * m3b - nb * m3a)
        )
    # Even sums are non-negative; only rounding in nearly constant data could
    # push them below zero.
    np.maximum(out[..., M2], 0.0, out=out[..., M2])
    np.maximum(out[..., M4], 0.0, out=out[..., M4])
    out[..., MIN] = np.minimum(a[..., MIN], b[..., MIN])
    out[..., MAX] = np.maximum(a[..., MAX], b[..., MAX])
    out = np.where((nb == 0)[..., None], a, out)
    out = np.where((na == 0)[..., None], b, out)
    return mark_overflow(out)


def batch_moments(xt: F64, finite: npt.NDArray[np.bool_] | None) -> F64:
    """Moment rows of each row of ``xt`` ``[F, n]``; ``finite`` masks non-finite values.

    Two passes (mean, then central sums), as :meth:`fleetcore.stats.Moments.of`.
    """
    features, rows = xt.shape
    m = np.empty((features, 7), dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if finite is None:
            count = np.full(features, float(rows))
            mean = xt.sum(axis=1) / rows
            d = xt - mean[:, None]
            m[:, MIN] = xt.min(axis=1)
            m[:, MAX] = xt.max(axis=1)
        else:
            count = finite.sum(axis=1).astype(np.float64)
            mean = np.where(finite, xt, 0.0).sum(axis=1) / np.maximum(count, 1.0)
            d = np.where(finite, xt - mean[:, None], 0.0)
            m[:, MIN] = np.where(finite, xt, np.inf).min(axis=1)
            m[:, MAX] = np.where(finite, xt, -np.inf).max(axis=1)
        d2 = d * d
        m[:, N] = count
        m[:, MEAN] = mean
        m[:, M2] = d2.sum(axis=1)
        m[:, M3] = np.einsum("ij,ij->i", d2, d)
        m[:, M4] = np.einsum("ij,ij->i", d2, d2)
    if finite is not None:
        empty = count == 0
        m[empty] = empty_moments(int(empty.sum()))
    return mark_overflow(m)


class Binner:
    """Bin counts of many features at once against fixed ``[F, 17]`` edges."""

    def __init__(self, edges: F64) -> None:
        if edges.ndim != 2 or edges.shape[1] != FEATURE_EDGES:
            raise ValueError(f"edges must be [F, {FEATURE_EDGES}], got {list(edges.shape)}")
        shifted = np.array(edges, dtype=np.float64)
        shifted[:, -1] = np.nextafter(shifted[:, -1], np.inf)
        self._edges = shifted[:, :, None]
        self.features = edges.shape[0]

    def reach(self, xt: F64) -> I64:
        """``C[j, k] = #{xt[j] >= edge[j, k]}`` (last edge: strictly above) as ``[F, 17]``.

        ``xt`` is ``[F, rows]`` with ``rows`` a multiple of 8 and at most
        :data:`MAX_ROWS`; pad with NaN.
        """
        features, rows = xt.shape
        if rows % 8 or rows > MAX_ROWS:
            raise ValueError(f"rows must be a multiple of 8 up to {MAX_ROWS}, got {rows}")
        out = np.empty((features, FEATURE_EDGES), dtype=np.int64)
        step = max(1, _BLOCK_BYTES // (FEATURE_EDGES * max(rows, 8)))
        for start in range(0, features, step):
            stop = min(start + step, features)
            hits = np.greater_equal(xt[start:stop, None, :], self._edges[start:stop])
            words = hits.view(np.uint64).sum(axis=2, dtype=np.uint64)
            lanes = words.view(np.uint8).reshape(stop - start, FEATURE_EDGES, 8)
            out[start:stop] = lanes.sum(axis=2, dtype=np.int64)
        return out


def counts_from_reach(reach: I64, finite: I64, pos_inf: I64) -> I64:
    """``[F, 18]`` counts ``[below, bin 1..16, above]`` from :meth:`Binner.reach`.

    ``finite`` and ``pos_inf`` count each feature's finite and +inf values;
    +inf reached every edge and is taken back out here.
    """
    c = reach - pos_inf[:, None]
    counts = np.empty((c.shape[0], FEATURE_COUNTS), dtype=np.int64)
    counts[:, 0] = finite - c[:, 0]
    counts[:, 1:-1] = c[:, :-1] - c[:, 1:]
    counts[:, -1] = c[:, -1]
    return counts
