"""On-device drift summaries: what a device saw in one window, mergeable anywhere.

Theory of operation. A :class:`DriftAccumulator` is built from the release's
:class:`~fleetcore.drift.reference.DriftReference` and fed the model's inputs
``[B, F]`` and output probabilities ``[B, K]``. It does not touch each sample
on arrival: rows are copied into a preallocated buffer (up to 1024 rows,
features-major, so the per-feature work runs along contiguous memory) and the
buffer is folded into the running totals in one vectorized pass when it fills
and in :meth:`DriftAccumulator.take`. A single sample costs one copy; a batch
costs one block copy; the fold is amortized over the whole buffer.

Per window (:class:`DriftCounts`), per feature: counts ``[below, bin 1..16,
above]`` against the reference's edges (exactly
:func:`fleetcore.stats.bin_counts_matrix`), NaN and ±Inf counts, and moments
``n, mean, M2, M3, M4, min, max`` of the finite values; per output:
predicted-class counts (argmax), the three 20-bin histograms of
:func:`fleetcore.stats.output_histograms` on the reference's ranges, and,
per max-probability bin, how many predictions got a ground-truth label
(``labelled``) and how many of those were ``correct``.

Invariants (checked by the constructor, so every ``DriftCounts`` holds them;
the wire decoder refuses bytes that break them):

- ``n`` (samples) ``= sum(class_counts) =`` each histogram's sum ``=`` each
  feature's ``sum(counts) + nan + inf``;
- a feature's moments describe ``sum(counts)`` finite values; with none, the
  sums are 0 and ``min``/``max`` are ``+inf``/``-inf``; otherwise
  ``min <= max``, ``M2 >= 0``, ``M4 >= 0``, and ``mean``..``M4`` are all finite
  or all NaN (sums that overflowed float64: unknown, never wrong);
- ``0 <= correct <= labelled``. Labels arrive late, so ``labelled`` is not tied
  to this window's histogram.

Merging (:meth:`DriftCounts.merge`, :func:`merge_all`) adds counts, exactly
and in any order; moments combine with the Chan/Pébay pairwise formulas,
equal to one pass over the pooled data up to rounding. Rows whose
probabilities are not finite are refused (a model bug, not drift), so the
histograms always sum to ``n``. The binary format is in
:mod:`fleetcore.drift.encoding`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from fleetcore.drift import _merge
from fleetcore.drift._invariants import MAX_SAMPLES, invariant_problem
from fleetcore.drift.reference import DriftReference
from fleetcore.errors import ProtocolError
from fleetcore.metadata._fields import NAME, SHA256_HEX
from fleetcore.protocol import MAX_COUNTER, check_device_id
from fleetcore.stats import (
    FEATURE_COUNTS,
    HISTOGRAMS,
    OUTPUT_BINS,
    Moments,
    output_histograms,
    output_ranges,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
MAX_WINDOW_S = 86400
#: Rows buffered before a fold, and the buffer's budget in values.
_BUFFER_ROWS = 1024
_BUFFER_VALUES = 1 << 16


@dataclass(frozen=True)
class WindowKey:
    """Which device, release and clock-aligned window a summary describes."""

    device: str
    model: str
    release: int
    reference: str
    start: int
    length: int
    seq: int

    def __post_init__(self) -> None:
        check_device_id(self.device)
        if not isinstance(self.model, str) or not NAME.fullmatch(self.model):
            raise ProtocolError(f"invalid model name {str(self.model)[:200]!r}")
        if not isinstance(self.reference, str) or not SHA256_HEX.fullmatch(self.reference):
            raise ProtocolError("drift reference digest must be 64 lower-case hex digits")
        for name in ("release", "seq"):
            _check_int(getattr(self, name), name, 1, MAX_COUNTER)
        _check_int(self.length, "window length", 1, MAX_WINDOW_S)
        _check_int(self.start, "window start", 0, 2**64 - 1)
        if self.start % self.length:
            raise ProtocolError(
                f"window start {self.start} is not a multiple of its length {self.length}"
            )


def _check_int(value: Any, what: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ProtocolError(f"{what} must be an integer in {low}..{high}, got {value!r}")


def _frozen(value: Any, what: str, shape: tuple[int, ...], integer: bool) -> Any:
    a = np.array(value)  # a private copy: the caller cannot change it afterwards
    if integer:
        if a.size and a.dtype.kind not in "iu":
            raise ValueError(f"{what} must be integers, got {a.dtype}")
        a = a.astype(np.int64)
    else:
        a = a.astype(np.float64)
    if a.shape != shape:
        raise ValueError(f"{what} must have shape {list(shape)}, got {list(a.shape)}")
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class DriftCounts:
    """The mergeable body of a summary; read-only numpy arrays."""

    counts: I64
    nan: I64
    inf: I64
    moments: F64
    class_counts: I64
    histograms: I64
    labelled: I64
    correct: I64

    def __post_init__(self) -> None:
        f = np.shape(self.counts)[0] if np.ndim(self.counts) else 0
        k = np.shape(self.class_counts)[0] if np.ndim(self.class_counts) else 0
        if f < 1 or k < 2:
            raise ValueError("drift counts need at least one feature and two classes")
        shapes = {
            "counts": ((f, FEATURE_COUNTS), True),
            "nan": ((f,), True),
            "inf": ((f,), True),
            "moments": ((f, 7), False),
            "class_counts": ((k,), True),
            "histograms": ((len(HISTOGRAMS), OUTPUT_BINS), True),
            "labelled": ((OUTPUT_BINS,), True),
            "correct": ((OUTPUT_BINS,), True),
        }
        for name, (shape, integer) in shapes.items():
            object.__setattr__(self, name, _frozen(getattr(self, name), name, shape, integer))
        problem = invariant_problem(self)
        if problem:
            raise ValueError(problem)

    @classmethod
    def _trusted(cls, **arrays: Any) -> DriftCounts:
        """Wrap arrays known to satisfy the invariants (results of merging), read-only."""
        obj = object.__new__(cls)
        for name, value in arrays.items():
            value.setflags(write=False)
            object.__setattr__(obj, name, value)
        return obj

    @classmethod
    def empty(cls, n_features: int, n_classes: int) -> DriftCounts:
        return cls(
            counts=np.zeros((n_features, FEATURE_COUNTS), dtype=np.int64),
            nan=np.zeros(n_features, dtype=np.int64),
            inf=np.zeros(n_features, dtype=np.int64),
            moments=_merge.empty_moments(n_features),
            class_counts=np.zeros(n_classes, dtype=np.int64),
            histograms=np.zeros((len(HISTOGRAMS), OUTPUT_BINS), dtype=np.int64),
            labelled=np.zeros(OUTPUT_BINS, dtype=np.int64),
            correct=np.zeros(OUTPUT_BINS, dtype=np.int64),
        )

    @property
    def n_features(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.class_counts.shape[0])

    @property
    def n(self) -> int:
        """Samples in the window."""
        return int(self.class_counts.sum())

    def merge(self, other: DriftCounts) -> DriftCounts:
        """Both windows' samples as one: counts added, moments merged (Pébay)."""
        return merge_all((self, other))

    def feature_moments(self, i: int) -> Moments:
        n, mean, m2, m3, m4, low, high = (float(v) for v in self.moments[i])
        return Moments(n=int(n), mean=mean, m2=m2, m3=m3, m4=m4, min=low, max=high)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DriftCounts):
            return NotImplemented
        return all(
            np.array_equal(getattr(self, f.name), getattr(other, f.name), equal_nan=True)
            for f in fields(self)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False)
class DriftSummary:
    """One device's drift summary of one window: its key and its counts."""

    key: WindowKey
    body: DriftCounts

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DriftSummary):
            return NotImplemented
        return self.key == other.key and self.body == other.body

    __hash__ = None  # type: ignore[assignment]


def merge_all(bodies: Iterable[DriftCounts]) -> DriftCounts:
    """All bodies merged as one; ValueError if there are none or their shapes differ.

    Moments are reduced as a balanced tree, one vectorized merge per level.
    """
    items = list(bodies)
    if not items:
        raise ValueError("nothing to merge")
    first = items[0]
    for other in items[1:]:
        if other.counts.shape != first.counts.shape or other.n_classes != first.n_classes:
            raise ValueError(
                f"cannot merge {other.n_features} features x {other.n_classes} classes into "
                f"{first.n_features} x {first.n_classes}"
            )
    if len(items) == 1:
        return first
    summed = {
        name: np.sum([getattr(c, name) for c in items], axis=0, dtype=np.int64)
        for name in ("counts", "nan", "inf", "class_counts", "histograms", "labelled", "correct")
    }
    m = np.stack([c.moments for c in items])
    while m.shape[0] > 1:
        half = m.shape[0] // 2
        merged = _merge.merge_moments(m[:half], m[half : 2 * half])
        m = np.concatenate([merged, m[2 * half :]]) if m.shape[0] % 2 else merged
    return DriftCounts._trusted(moments=m[0], **summed)


class DriftAccumulator:
    """Accumulates one window's :class:`DriftCounts`; not thread-safe."""

    def __init__(self, reference: DriftReference) -> None:
        edges = reference.edges()
        self._features = edges.shape[0]
        self._classes = len(reference.class_names)
        self._binner = _merge.Binner(edges)
        self._low, self._high = output_ranges(self._classes)["max_probability"]
        rows = min(_BUFFER_ROWS, _BUFFER_VALUES // self._features)
        self._rows = max(8, rows - rows % 8)
        # Inputs are kept features-major: the fold reduces along contiguous rows.
        self._x = np.empty((self._features, self._rows), dtype=np.float64)
        self._p = np.empty((self._rows, self._classes), dtype=np.float64)
        self._fill = 0
        self._reset()

    def _reset(self) -> None:
        f = self._features
        self._counts = np.zeros((f, FEATURE_COUNTS), dtype=np.int64)
        self._nan = np.zeros(f, dtype=np.int64)
        self._inf = np.zeros(f, dtype=np.int64)
        self._moments = _merge.empty_moments(f)
        self._class_counts = np.zeros(self._classes, dtype=np.int64)
        self._histograms = np.zeros((len(HISTOGRAMS), OUTPUT_BINS), dtype=np.int64)
        self._labelled = np.zeros(OUTPUT_BINS, dtype=np.int64)
        self._correct = np.zeros(OUTPUT_BINS, dtype=np.int64)
        self._n = 0

    @property
    def n(self) -> int:
        """Samples since the last :meth:`take`."""
        return self._n + self._fill

    def update(self, inputs: npt.ArrayLike, probabilities: npt.ArrayLike) -> None:
        """Add inputs ``[B, F]`` (or ``[F]``) and their probabilities ``[B, K]`` (or ``[K]``).

        Raises ValueError, having added nothing, on a shape mismatch or
        non-finite probabilities.
        """
        x, p = np.asarray(inputs), np.asarray(probabilities)
        fill = self._fill
        if x.ndim == 1 and x.shape[0] == self._features and p.shape == (self._classes,):
            self._x[:, fill] = x
            self._p[fill] = p
            if not np.isfinite(self._p[fill]).all():
                raise ValueError("probabilities must be finite")
            self._fill = fill + 1
            if self._fill == self._rows:
                self._fold()
            return
        rows = x.shape[0] if x.ndim == 2 else -1
        if x.shape != (rows, self._features) or p.shape != (rows, self._classes):
            raise ValueError(
                f"need inputs [B, {self._features}] and probabilities [B, {self._classes}] "
                f"(or one row of each), got {list(x.shape)} and {list(p.shape)}"
            )
        if not np.isfinite(p).all():
            raise ValueError("probabilities must be finite")
        if x.dtype.kind not in "biuf":
            x = x.astype(np.float64)  # fails here, before anything was added
        done = 0
        while done < rows:
            take = min(self._rows - self._fill, rows - done)
            self._x[:, self._fill : self._fill + take] = x[done : done + take].T
            self._p[self._fill : self._fill + take] = p[done : done + take]
            self._fill += take
            done += take
            if self._fill == self._rows:
                self._fold()

    def feedback(self, max_probability: float, correct: bool) -> None:
        """Record a ground-truth label for a prediction made with ``max_probability``."""
        value = float(max_probability)
        if not math.isfinite(value):
            raise ValueError("max_probability must be finite")
        # The same arithmetic as fleetcore.stats.histogram, so the bins agree.
        scaled = (value - self._low) / (self._high - self._low) * OUTPUT_BINS
        index = min(max(math.floor(scaled), 0), OUTPUT_BINS - 1)
        self._labelled[index] += 1
        if correct:
            self._correct[index] += 1

    def take(self) -> DriftCounts:
        """Everything accumulated (buffered rows included); starts over empty."""
        if self._fill:
            self._fold()
        body = DriftCounts._trusted(
            counts=self._counts,
            nan=self._nan,
            inf=self._inf,
            moments=self._moments,
            class_counts=self._class_counts,
            histograms=self._histograms,
            labelled=self._labelled,
            correct=self._correct,
        )
        self._reset()
        return body

    def _fold(self) -> None:
        """Add the buffered rows to the totals in one vectorized pass."""
        m = self._fill
        padded = m + (-m % 8)
        x = self._x[:, :m]
        p = self._p[:m]
        finite_mask = np.isfinite(x)
        if finite_mask.all():
            finite = np.full(self._features, m, dtype=np.int64)
            pos_inf = np.zeros(self._features, dtype=np.int64)
            moments = _merge.batch_moments(x, None)
        else:
            finite = finite_mask.sum(axis=1)
            nan = np.isnan(x).sum(axis=1)
            pos_inf = (x == np.inf).sum(axis=1)
            self._nan += nan
            self._inf += m - finite - nan
            moments = _merge.batch_moments(x, finite_mask)
        self._x[:, m:padded] = np.nan  # NaN reaches no edge: padding counts nothing
        reach = self._binner.reach(self._x[:, :padded])
        self._counts += _merge.counts_from_reach(reach, finite, pos_inf)
        self._moments = _merge.merge_moments(self._moments, moments)
        self._class_counts += np.bincount(np.argmax(p, axis=1), minlength=self._classes)
        hists = output_histograms(p)
        for row, name in enumerate(HISTOGRAMS):
            self._histograms[row] += hists[name]
        self._n += m
        self._fill = 0


__all__ = [
    "MAX_SAMPLES",
    "MAX_WINDOW_S",
    "DriftAccumulator",
    "DriftCounts",
    "DriftSummary",
    "WindowKey",
    "merge_all",
]
