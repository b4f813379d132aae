"""Reading and checking a drift summary body (:mod:`fleetcore.drift.encoding`) in one pass.

Theory of operation: ingestion stores a summary as received and needs only
its key and sample count, yet must never store a malformed one. So the body
is checked here, on the wire values, with a fixed handful of vectorized
operations, before (and without) building a
:class:`~fleetcore.drift.summary.DriftCounts`: :func:`read_body` returns the
decoded counts and the raw moment records once every invariant the full
decoder enforces holds. :func:`fleetcore.drift.encoding.decode` builds the
arrays from the result and checks them once more with the same
:func:`~fleetcore.drift._invariants.invariant_problem` as the constructor.

Why the wire checks are enough: counts are non-negative by construction
(varints); every count but ``labelled``/``correct`` is at most ``n`` (the sum
of the class counts, below :data:`MAX_SAMPLES`), so the sums below cannot
overflow int64. Moments are rebuilt as ``M3 = s3 * M2^1.5`` and
``M4 = s4 * M2^2`` from finite ``M2 >= 0`` and ``s4 >= 0``, so they are
finite (or overflow to inf, which the decoder marks unknown) and ``M4 >= 0``;
``min``/``max`` are float32 values widened exactly. Hence a body passing
here also passes ``invariant_problem`` after rebuilding.

Batches: :func:`sample_counts` runs the same checks on many bodies of one
shape ``(F, K)`` at once, as one matrix of counts and one array of moment
records, so ingestion pays the numpy calls once per batch, not per summary.
It only ever vouches for a body: a body it does not vouch for (``None``) is
put through :func:`read_body`, which names the problem or, if the batch check
was stricter than needed, accepts it. Every batch check is at least as strict
as its :func:`read_body` counterpart, so a body vouched for here passes there
with the same ``n``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from fleetcore.drift import _wire
from fleetcore.drift._invariants import MAX_SAMPLES
from fleetcore.errors import ProtocolError
from fleetcore.stats import FEATURE_COUNTS, HISTOGRAMS, OUTPUT_BINS

#: Varints per feature: the 18 bins, then NaN and Inf.
PER_FEATURE = 2 + FEATURE_COUNTS
#: Varints after the class counts: three histograms, labelled, correct.
TAIL = len(HISTOGRAMS) * OUTPUT_BINS + 2 * OUTPUT_BINS
#: One moment record: mean, M2 (float64); M3/M2^1.5, M4/M2^2, min, max (float32).
MOMENT_BYTES = 32
_HISTOGRAM_VALUES = len(HISTOGRAMS) * OUTPUT_BINS


class Body(NamedTuple):
    """A checked body: ``values`` are every count in wire order; ``moments`` the
    records of the features with a finite value, as float64 columns ``mean, M2,
    s3, s4, min, max``."""

    values: _wire.I64
    n: int
    finite: _wire.I64  # per feature: values counted in its 18 bins
    moments: _wire.F64


def read_body(raw: bytes, f: int, k: int) -> Body:
    """The checked counts and moment records of an uncompressed body; ProtocolError."""
    count = f * PER_FEATURE + k + TAIL
    try:
        values, end = _wire.decode_varints(raw, 0, count)
    except _wire.VarintError as exc:
        raise ProtocolError(f"drift summary counts: {exc}") from exc
    # Python integers: K counts of up to 2**63 each cannot overflow here.
    n = sum(values[f * PER_FEATURE : f * PER_FEATURE + k].tolist())
    if n >= MAX_SAMPLES:
        raise ProtocolError(f"{n} samples in one window is more than {MAX_SAMPLES}")
    # Labels arrive late, so only ``labelled``/``correct`` may exceed ``n``; a
    # bound on the rest keeps the sums below from overflowing int64.
    if int(values[: -2 * OUTPUT_BINS].max()) > n:
        raise ProtocolError(f"a count exceeds the window's {n} samples")
    labels = values[-2 * OUTPUT_BINS :].reshape(2, OUTPUT_BINS)
    if int(labels.max()) > MAX_SAMPLES:
        raise ProtocolError(f"drift summary: counts must lie in 0..{MAX_SAMPLES}")
    per_feature = values[: f * PER_FEATURE].reshape(f, PER_FEATURE)
    finite = per_feature[:, :FEATURE_COUNTS].sum(axis=1)
    bad = np.flatnonzero(per_feature.sum(axis=1) != n)
    if bad.size:
        raise ProtocolError(
            f"drift summary: feature {int(bad[0])} counts do not sum to the {n} samples "
            "of the window"
        )
    start = f * PER_FEATURE + k
    sums = values[start : start + _HISTOGRAM_VALUES].reshape(len(HISTOGRAMS), OUTPUT_BINS).sum(1)
    if (sums != n).any():
        name = HISTOGRAMS[int(np.flatnonzero(sums != n)[0])]
        raise ProtocolError(
            f"drift summary: {name} histogram does not sum to the {n} samples of the window"
        )
    if (labels[1] > labels[0]).any():
        raise ProtocolError(
            "drift summary: more correct predictions than labelled ones in a max-probability bin"
        )
    present = np.flatnonzero(finite)
    return Body(values, n, finite, _moments(raw, end, present))


def sample_counts(raws: list[bytes], f: int, k: int) -> list[int | None]:
    """Per body of shape ``(f, k)``: its sample count if every check of
    :func:`read_body` passes, else None (then :func:`read_body` decides)."""
    count = f * PER_FEATURE + k + TAIL
    rows: list[bytes] = []
    ends: list[int] = []
    decoded: dict[int, _wire.I64] = {}
    for i, raw in enumerate(raws):
        head = raw[:count]
        if len(head) == count and head.isascii():  # every count one byte: the common case
            rows.append(head)
            ends.append(count)
            continue
        try:
            values, end = _wire.decode_varints(raw, 0, count)
        except _wire.VarintError:
            values, end = np.zeros(count, dtype=np.int64), -1
        decoded[i] = values
        rows.append(bytes(count))
        ends.append(end)
    v = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(raws), count).astype(np.int64)
    for i, values in decoded.items():
        v[i] = values
    good = np.asarray(ends) >= 0
    classes = v[:, f * PER_FEATURE : f * PER_FEATURE + k]
    # Below MAX_SAMPLES each, K <= 1024 class counts sum below 2**63: no overflow.
    good &= (classes < MAX_SAMPLES).all(axis=1)
    n = np.where(good[:, None], classes, 0).sum(axis=1)
    good &= n < MAX_SAMPLES
    good &= v[:, : -2 * OUTPUT_BINS].max(axis=1) <= n
    labels = v[:, -2 * OUTPUT_BINS :].reshape(-1, 2, OUTPUT_BINS)
    good &= labels.max(axis=(1, 2)) <= MAX_SAMPLES
    good &= (labels[:, 1] <= labels[:, 0]).all(axis=1)
    per_feature = v[:, : f * PER_FEATURE].reshape(-1, f, PER_FEATURE)
    good &= (per_feature.sum(axis=2) == n[:, None]).all(axis=1)
    start = f * PER_FEATURE + k
    histograms = v[:, start : start + _HISTOGRAM_VALUES].reshape(-1, len(HISTOGRAMS), OUTPUT_BINS)
    good &= (histograms.sum(axis=2) == n[:, None]).all(axis=1)
    present = per_feature[:, :, :FEATURE_COUNTS].sum(axis=2) > 0
    records = present.sum(axis=1)
    sizes = np.asarray([len(raw) - end for raw, end in zip(raws, ends, strict=True)])
    good &= sizes == records * MOMENT_BYTES
    tails = [raw[end:] if ok else b"" for raw, end, ok in zip(raws, ends, good, strict=True)]
    good &= _records_ok(b"".join(tails), np.where(good, records, 0))
    return [int(m) if ok else None for m, ok in zip(n, good, strict=True)]


def _records_ok(blob: bytes, records: _wire.I64) -> npt.NDArray[np.bool_]:
    """Per body: whether its ``records[i]`` moment records (concatenated in ``blob``)
    pass the checks of :func:`_moments`."""
    total = int(records.sum())
    wide = np.frombuffer(blob, dtype=">f8", count=4 * total).reshape(total, 4)
    narrow = np.frombuffer(blob, dtype=">f4", count=8 * total).reshape(total, 8)
    m = np.concatenate((wide[:, :2], narrow[:, 4:]), axis=1).astype(np.float64)
    known = np.isfinite(m[:, :4]).all(axis=1)
    ok = known | np.isnan(m[:, :4]).all(axis=1)
    ok &= ~(known & ((m[:, 1] < 0) | (m[:, 3] < 0)))
    low, high = m[:, 4], m[:, 5]
    ok &= (low <= high) & (low < np.inf) & (high > -np.inf)
    owner = np.repeat(np.arange(records.size), records)
    bad = np.bincount(owner[~ok], minlength=records.size)
    result: npt.NDArray[np.bool_] = bad == 0
    return result


def _moments(raw: bytes, offset: int, present: _wire.I64) -> _wire.F64:
    rows = int(present.size)
    size = rows * MOMENT_BYTES
    if len(raw) - offset < size:
        raise ProtocolError("drift summary truncated in the moments")
    if len(raw) - offset > size:
        raise ProtocolError(f"{len(raw) - offset - size} trailing bytes after the drift summary")
    wide = np.frombuffer(raw, dtype=">f8", count=4 * rows, offset=offset).reshape(rows, 4)
    narrow = np.frombuffer(raw, dtype=">f4", count=8 * rows, offset=offset).reshape(rows, 8)
    m = np.concatenate((wide[:, :2], narrow[:, 4:]), axis=1).astype(np.float64)
    known = np.isfinite(m[:, :4]).all(axis=1)
    if not (known | np.isnan(m[:, :4]).all(axis=1)).all():
        raise ProtocolError("drift summary moments must be all finite or all NaN per feature")
    if (known & ((m[:, 1] < 0) | (m[:, 3] < 0))).any():
        raise ProtocolError("drift summary M2 and M4 cannot be negative")
    low, high = m[:, 4], m[:, 5]
    ok = (low <= high) & (low < np.inf) & (high > -np.inf)
    if not ok.all():
        where = int(present[np.flatnonzero(~ok)[0]])
        raise ProtocolError(f"drift summary: feature {where}: min must not exceed max")
    return m
