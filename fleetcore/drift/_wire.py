"""Vectorized byte-level helpers of :mod:`fleetcore.drift.encoding`.

Varints are unsigned LEB128: seven bits per byte, least significant group
first, the high bit set on every byte but the last. Only the shortest form of
a value is valid (no trailing ``0x00`` group) and at most 9 bytes (63 bits),
so every decoded value fits an int64 and every value has one encoding.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
MAX_VARINT_BYTES = 9
_SHIFTS = np.arange(MAX_VARINT_BYTES, dtype=np.uint64) * np.uint64(7)


class VarintError(ValueError):
    """Bytes that are not a valid run of varints; the message says why."""


def encode_varints(values: I64) -> bytes:
    """The concatenated varints of non-negative ``values`` (below 2**63)."""
    v = np.asarray(values, dtype=np.int64).ravel()
    if v.size and v.min() < 0:
        raise ValueError("varints encode non-negative integers only")
    u = v.astype(np.uint64)
    groups = (u[:, None] >> _SHIFTS[None, :]) & np.uint64(0x7F)
    # Bytes needed: one more than the index of the highest non-zero group.
    nonzero = groups != 0
    length = np.where(nonzero.any(axis=1), MAX_VARINT_BYTES - np.argmax(nonzero[:, ::-1], 1), 1)
    position = np.arange(MAX_VARINT_BYTES)[None, :]
    out = groups.astype(np.uint8) | ((position < length[:, None] - 1) * 0x80).astype(np.uint8)
    return bytes(out[position < length[:, None]].tobytes())


def decode_varints(data: bytes, offset: int, count: int) -> tuple[I64, int]:
    """``count`` varints starting at ``offset``; returns them and the offset after.

    A handful of numpy calls whatever ``count``: the ends of the varints are
    the bytes below ``0x80``; when the ``count``-th end is byte ``count - 1``
    every varint is one byte (small windows) and the bytes are the values.
    Otherwise each value is assembled from its last (most significant) group
    down, one vectorized step per byte of the longest varint (at most 9).
    """
    if count == 0:
        return np.zeros(0, dtype=np.int64), offset
    window = np.frombuffer(data, dtype=np.uint8)[offset : offset + count * MAX_VARINT_BYTES]
    ends = np.flatnonzero(window < 0x80)
    if ends.size < count:
        raise VarintError(f"truncated or malformed: {ends.size} of {count} counts found")
    last = int(ends[count - 1])
    if last == count - 1:
        return window[:count].astype(np.int64), offset + count
    ends = ends[:count]
    lengths = np.diff(ends, prepend=-1)
    longest = int(lengths.max())
    if longest > MAX_VARINT_BYTES:
        raise VarintError(f"a count is longer than {MAX_VARINT_BYTES} bytes")
    top = window[ends]
    if np.any((lengths > 1) & (top == 0)):
        raise VarintError("a count is not in its shortest form")
    # At most 9 groups of 7 bits: 63 bits, so int64 never overflows.
    values = top.astype(np.int64)
    for k in range(1, longest):
        more = np.flatnonzero(lengths > k)
        values[more] = (values[more] << 7) | (window[ends[more] - k] & 0x7F)
    return values, offset + last + 1


def float32_down(x: F64) -> F32:
    """The largest float32 ``<= x``, element-wise (``-inf`` below the float32 range)."""
    with np.errstate(over="ignore"):
        f = x.astype(np.float32)
    high = f.astype(np.float64) > x
    f[high] = np.nextafter(f[high], np.float32(-np.inf))
    return f


def float32_up(x: F64) -> F32:
    """The smallest float32 ``>= x``, element-wise (``+inf`` above the float32 range)."""
    with np.errstate(over="ignore"):
        f = x.astype(np.float32)
    low = f.astype(np.float64) < x
    f[low] = np.nextafter(f[low], np.float32(np.inf))
    return f
