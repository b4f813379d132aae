"""The binary wire format of a :class:`~fleetcore.drift.summary.DriftSummary`.

One summary is one MQTT payload (``edgefleet/v1/devices/{d}/drift``) or one
HTTP body. Compact, because devices send one per window over metered links:
about 55 bytes per feature for a 60 s window (target: at most 64). Parsed
strictly: anything not exactly as below is refused with
:class:`~fleetcore.errors.ProtocolError` naming what was wrong, and nothing is
allocated in proportion to a claimed size before it is checked.

Header, uncompressed, big-endian (62 bytes + the two names)::

    offset size  field
    0      4     magic b"EFDS"
    4      1     version, 1
    5      1     flags: bit 0 = body is zlib-compressed; other bits 0
    6      2     F, input features, 1..4096
    8      2     K, classes, 2..1024
    10     32    drift reference digest, raw sha256 (hex in WindowKey.reference)
    42     4     release counter, 1..2**31-1
    46     4     seq, the device's drift-summary sequence, 1..2**31-1
    50     8     window start, unix seconds, a multiple of the length
    58     4     window length, seconds, 1..86400
    62     1+d   device id: length byte d, then d ASCII bytes
    63+d   1+m   model name: length byte m, then m ASCII bytes

Body, zlib-compressed (RFC 1950) when that is smaller, then at most 1 MiB;
all counts are unsigned LEB128 varints, shortest form, at most 9 bytes:

1. per feature ``i`` in model order, 20 varints: the 18 bin counts
   ``[below, bin 1..16, above]``, then NaN count, then ±Inf count;
2. K varints: predicted-class counts;
3. 3 x 20 varints: entropy, margin, max-probability histograms;
4. 20 varints ``labelled``, then 20 varints ``correct``, per
   max-probability bin;
5. per feature with at least one finite value (``sum of its 18 counts > 0``),
   in model order, 32 bytes: ``mean`` float64, ``M2`` float64,
   ``M3 / M2^1.5`` float32 and ``M4 / M2^2`` float32 (0 when ``M2 = 0``;
   scale-free, so they cannot overflow float32 whatever the units), ``min``
   float32 rounded down and ``max`` float32 rounded up (so the range stays
   conservative). All four of ``mean``..``M4 / M2^2`` are NaN for a feature
   whose sums overflowed. A feature's moment ``n`` is its count sum; the
   window's sample count ``n`` is the sum of the class counts.

The body must end exactly after part 5. Decoding checks every invariant of
:class:`~fleetcore.drift.summary.DriftCounts` (each feature's counts + NaN +
Inf and each histogram sum to ``n``, ``correct <= labelled``, finite
non-negative ``M2`` and ``M4``, ``min <= max``). Counts round-trip exactly;
``mean`` and ``M2`` exactly; ``M3`` and ``M4`` within float32 rounding.
The checks run on the wire values (:mod:`._body`), so :func:`validate` gives
ingestion a summary's key and sample count with every check of
:func:`decode` and without building the arrays.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np

from fleetcore.drift import _body, _merge, _wire
from fleetcore.drift._invariants import invariant_problem
from fleetcore.drift.summary import DriftCounts, DriftSummary, WindowKey
from fleetcore.errors import ProtocolError
from fleetcore.stats import FEATURE_COUNTS, HISTOGRAMS, OUTPUT_BINS

MAGIC = b"EFDS"
VERSION = 1
FLAG_ZLIB = 0x01
#: Largest summary accepted on the wire.
MAX_SUMMARY_BYTES = 64 * 1024
#: Largest body after decompression (stops zip bombs).
MAX_BODY_BYTES = 1 << 20
MAX_FEATURES = 4096
MAX_CLASSES = 1024
_HEADER = struct.Struct(">4sBBHH32sIIQI")
_PER_FEATURE = _body.PER_FEATURE
_MOMENTS = np.dtype(
    [("mean", ">f8"), ("m2", ">f8"), ("s3", ">f4"), ("s4", ">f4"), ("min", ">f4"), ("max", ">f4")]
)


def encode(summary: DriftSummary) -> bytes:
    """The wire bytes of ``summary``; ValueError if it cannot fit the format."""
    key, body = summary.key, summary.body
    f, k = body.n_features, body.n_classes
    if not (1 <= f <= MAX_FEATURES and 2 <= k <= MAX_CLASSES):
        raise ValueError(f"{f} features x {k} classes exceed the format's 4096 x 1024")
    counts = np.concatenate(
        [
            np.column_stack([body.counts, body.nan, body.inf]).ravel(),
            body.class_counts,
            body.histograms.ravel(),
            body.labelled,
            body.correct,
        ]
    )
    raw = _wire.encode_varints(counts) + _moment_bytes(body)
    packed = zlib.compress(raw, 9)
    flags, payload = (FLAG_ZLIB, packed) if len(packed) < len(raw) else (0, raw)
    device, model = key.device.encode("ascii"), key.model.encode("ascii")
    head = _HEADER.pack(
        MAGIC,
        VERSION,
        flags,
        f,
        k,
        bytes.fromhex(key.reference),
        key.release,
        key.seq,
        key.start,
        key.length,
    )
    data = b"".join((head, bytes([len(device)]), device, bytes([len(model)]), model, payload))
    if len(data) > MAX_SUMMARY_BYTES:
        raise ValueError(f"summary of {len(data)} bytes exceeds {MAX_SUMMARY_BYTES}")
    return data


def _moment_bytes(body: DriftCounts) -> bytes:
    m = body.moments[body.moments[:, _merge.N] > 0]
    out = np.zeros(m.shape[0], dtype=_MOMENTS)
    m2 = m[:, _merge.M2]
    spread = m2 > 0
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        s3 = np.where(spread, m[:, _merge.M3] / m2 / np.sqrt(m2), 0.0)
        s4 = np.where(spread, m[:, _merge.M4] / m2 / m2, 0.0)
    unknown = np.isnan(m[:, _merge.MEAN])
    s3[unknown] = s4[unknown] = np.nan
    out["mean"], out["m2"], out["s3"], out["s4"] = m[:, _merge.MEAN], m2, s3, s4
    out["min"] = _wire.float32_down(m[:, _merge.MIN])
    out["max"] = _wire.float32_up(m[:, _merge.MAX])
    return out.tobytes()


def decode_key(data: bytes, *, max_bytes: int = MAX_SUMMARY_BYTES) -> WindowKey:
    """The :class:`WindowKey` of a summary, reading the header only."""
    return _header(data, max_bytes)[0]


def validate(data: bytes, *, max_bytes: int = MAX_SUMMARY_BYTES) -> tuple[WindowKey, int]:
    """The key and sample count of a summary after every check :func:`decode` makes
    (ProtocolError on anything malformed), without building its body: for
    ingestion, which stores the bytes as received."""
    key, f, k, offset, compressed = _header(data, max_bytes)
    return key, _body.read_body(_raw_body(data, offset, compressed), f, k).n


def validate_many(
    items: Sequence[bytes], *, max_bytes: int = MAX_SUMMARY_BYTES
) -> list[tuple[WindowKey, int] | ProtocolError]:
    """:func:`validate` for each of ``items``, in order: its result, or the
    ProtocolError it raises. The bodies of one shape are checked together
    (:func:`._body.sample_counts`); one that does not pass there is checked
    alone, so its refusal reads as :func:`validate`'s."""
    results: list[tuple[WindowKey, int] | ProtocolError | None] = []
    shapes: dict[tuple[int, int], list[tuple[int, WindowKey, bytes]]] = {}
    for index, data in enumerate(items):
        try:
            key, f, k, offset, compressed = _header(data, max_bytes)
            raw = _raw_body(data, offset, compressed)
        except ProtocolError as exc:
            results.append(exc)
            continue
        except ValueError as exc:  # as validate would raise it, as a refusal
            results.append(ProtocolError(str(exc)))
            continue
        results.append(None)  # filled in below, with the rest of its shape
        shapes.setdefault((f, k), []).append((index, key, raw))
    for (f, k), members in shapes.items():
        counts = _body.sample_counts([raw for _, _, raw in members], f, k)
        for (index, key, raw), vouched in zip(members, counts, strict=True):
            n = vouched
            if n is None:
                try:
                    n = _body.read_body(raw, f, k).n
                except ProtocolError as exc:
                    results[index] = exc
                    continue
                except ValueError as exc:  # as validate would raise it, as a refusal
                    results[index] = ProtocolError(str(exc))
                    continue
            results[index] = (key, n)
    return [r for r in results if r is not None]


def decode(data: bytes, *, max_bytes: int = MAX_SUMMARY_BYTES) -> DriftSummary:
    """Parse and check a summary; ProtocolError on anything malformed."""
    key, f, k, offset, compressed = _header(data, max_bytes)
    checked = _body.read_body(_raw_body(data, offset, compressed), f, k)
    values = checked.values
    per_feature = values[: f * _PER_FEATURE].reshape(f, _PER_FEATURE)
    rest = values[f * _PER_FEATURE :]
    hist_size = len(HISTOGRAMS) * OUTPUT_BINS
    arrays = {
        "counts": per_feature[:, :FEATURE_COUNTS],
        "nan": per_feature[:, FEATURE_COUNTS],
        "inf": per_feature[:, FEATURE_COUNTS + 1],
        "moments": _moments(checked),
        "class_counts": rest[:k],
        "histograms": rest[k : k + hist_size].reshape(len(HISTOGRAMS), OUTPUT_BINS),
        "labelled": rest[k + hist_size : k + hist_size + OUTPUT_BINS],
        "correct": rest[k + hist_size + OUTPUT_BINS :],
    }
    body = DriftCounts._trusted(**arrays)
    # read_body has checked every invariant on the wire values; this is the
    # constructor's own check on the rebuilt arrays, so the two never drift apart.
    problem = invariant_problem(body)
    if problem:
        raise ProtocolError(f"drift summary: {problem}")
    return DriftSummary(key=key, body=body)


def _raw_body(data: bytes, offset: int, compressed: bool) -> bytes:
    raw = _inflate(data[offset:]) if compressed else bytes(data[offset:])
    if len(raw) > MAX_BODY_BYTES:
        raise ProtocolError(f"drift summary body exceeds {MAX_BODY_BYTES} bytes")
    return raw


def _header(data: bytes, max_bytes: int) -> tuple[WindowKey, int, int, int, bool]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError("a drift summary must be bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise ProtocolError(f"drift summary of {len(data)} bytes exceeds {max_bytes}")
    if len(data) < _HEADER.size + 2:
        raise ProtocolError(f"drift summary truncated: {len(data)} bytes, no full header")
    magic, version, flags, f, k, digest, release, seq, start, length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError(f"not a drift summary: magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise ProtocolError(f"unsupported drift summary version {version}")
    if flags & ~FLAG_ZLIB:
        raise ProtocolError(f"unknown drift summary flags 0x{flags:02x}")
    if not (1 <= f <= MAX_FEATURES):
        raise ProtocolError(f"feature count {f} outside 1..{MAX_FEATURES}")
    if not (2 <= k <= MAX_CLASSES):
        raise ProtocolError(f"class count {k} outside 2..{MAX_CLASSES}")
    offset = _HEADER.size
    names = []
    for what in ("device id", "model name"):
        if offset >= len(data):
            raise ProtocolError(f"drift summary truncated before the {what}")
        size = data[offset]
        text = data[offset + 1 : offset + 1 + size]
        if len(text) < size:
            raise ProtocolError(f"drift summary truncated in the {what}")
        try:
            names.append(text.decode("ascii"))
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"{what} is not ASCII") from exc
        offset += 1 + size
    key = WindowKey(
        device=names[0],
        model=names[1],
        release=release,
        reference=digest.hex(),
        start=start,
        length=length,
        seq=seq,
    )
    return key, f, k, offset, bool(flags & FLAG_ZLIB)


def _inflate(body: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        # max_length stops a zip bomb after MAX_BODY_BYTES + 1 bytes of output.
        raw = inflater.decompress(body, MAX_BODY_BYTES + 1)
    except zlib.error as exc:
        raise ProtocolError(f"drift summary body is not valid zlib: {exc}") from exc
    if len(raw) > MAX_BODY_BYTES or inflater.unconsumed_tail:
        raise ProtocolError(f"drift summary body inflates beyond {MAX_BODY_BYTES} bytes")
    if not inflater.eof:
        raise ProtocolError("drift summary body truncated: incomplete zlib stream")
    if inflater.unused_data:
        raise ProtocolError("trailing bytes after the compressed drift summary body")
    return raw


def _moments(checked: _body.Body) -> _wire.F64:
    """Moment rows ``[n, mean, M2, M3, M4, min, max]`` rebuilt from the checked records."""
    rec = checked.moments
    mean, m2, s3, s4 = rec[:, 0], rec[:, 1], rec[:, 2], rec[:, 3]
    moments = _merge.empty_moments(checked.finite.shape[0])
    moments[:, _merge.N] = checked.finite
    with np.errstate(over="ignore", invalid="ignore"):
        block = np.column_stack(
            [mean, m2, s3 * m2 * np.sqrt(m2), s4 * m2 * m2, rec[:, 4], rec[:, 5]]
        )
    moments[checked.finite > 0, 1:] = block
    # A huge but finite M2 can overflow M4 back to inf: mark it unknown.
    return _merge.mark_overflow(moments)


__all__ = [
    "MAGIC",
    "MAX_BODY_BYTES",
    "MAX_CLASSES",
    "MAX_FEATURES",
    "MAX_SUMMARY_BYTES",
    "VERSION",
    "decode",
    "decode_key",
    "encode",
    "validate",
    "validate_many",
]
