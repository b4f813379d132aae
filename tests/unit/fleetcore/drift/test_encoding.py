"""The drift summary wire format: layout, round trips and strict refusal."""

from __future__ import annotations

import math
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetcore.drift import _wire
from fleetcore.drift.encoding import (
    MAX_BODY_BYTES,
    MAX_SUMMARY_BYTES,
    _moment_bytes,
    decode,
    decode_key,
    encode,
    validate,
)
from fleetcore.drift.summary import DriftAccumulator, DriftCounts, DriftSummary
from fleetcore.errors import ProtocolError

from ._summary_data import CLASSES, FEATURES, accumulate, key, live, reference

F, K = len(FEATURES), len(CLASSES)


def _summary(n: int = 200, seed: int = 1) -> DriftSummary:
    x, p = live(n, seed)
    acc = DriftAccumulator(reference())
    acc.update(x, p)
    for i in range(0, n, 3):
        acc.feedback(float(p[i].max()), i % 2 == 0)
    return DriftSummary(key(), acc.take())


def _vector(body: DriftCounts) -> np.ndarray:
    return np.concatenate(
        [
            np.column_stack([body.counts, body.nan, body.inf]).ravel(),
            body.class_counts,
            body.histograms.ravel(),
            body.labelled,
            body.correct,
        ]
    )


def _craft(
    body: bytes,
    *,
    magic: bytes = b"EFDS",
    version: int = 1,
    flags: int = 0,
    f: int = F,
    k: int = K,
    release: int = 3,
    seq: int = 17,
    start: int = 1_700_000_040,
    length: int = 60,
    device: bytes = b"dev-0001",
    model: bytes = b"sensor",
) -> bytes:
    head = struct.pack(
        ">4sBBHH32sIIQI",
        magic,
        version,
        flags,
        f,
        k,
        bytes.fromhex(reference().digest()),
        release,
        seq,
        start,
        length,
    )
    return head + bytes([len(device)]) + device + bytes([len(model)]) + model + body


def _body(s: DriftSummary, vector: np.ndarray | None = None, moments: bytes | None = None) -> bytes:
    counts = _wire.encode_varints(_vector(s.body) if vector is None else vector)
    return counts + (_moment_bytes(s.body) if moments is None else moments)


def test_header_layout_byte_by_byte() -> None:
    s = _summary()
    data = encode(s)
    assert data[:4] == b"EFDS" and data[4] == 1 and data[5] in (0, 1)
    assert struct.unpack(">HH", data[6:10]) == (F, K)
    assert data[10:42].hex() == s.key.reference
    assert struct.unpack(">IIQI", data[42:62]) == (3, 17, 1_700_000_040, 60)
    assert data[62] == 8 and data[63:71] == b"dev-0001"
    assert data[71] == 6 and data[72:78] == b"sensor"
    raw = _body(s)
    payload = data[78:]
    assert payload == (zlib.compress(raw, 9) if data[5] else raw)
    assert data == _craft(payload, flags=data[5])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 700), st.integers(0, 2**16), st.booleans())
def test_round_trip(n: int, seed: int, non_finite: bool) -> None:
    x, p = live(n, seed, shift=seed % 5)
    if non_finite and n > 3:
        x[0, 0], x[1, 1], x[2, 2] = math.nan, math.inf, -math.inf
        x[3, 3] = 1e300  # beyond float32: min/max widen to +-inf on the wire
    s = DriftSummary(key(seq=seed + 1), accumulate(x, p))
    back = decode(encode(s))
    assert back.key == s.key
    for name in ("counts", "nan", "inf", "class_counts", "histograms", "labelled", "correct"):
        assert np.array_equal(getattr(back.body, name), getattr(s.body, name)), name
    a, b = back.body.moments, s.body.moments
    assert np.array_equal(a[:, :3], b[:, :3], equal_nan=True)  # n, mean, M2 exact
    np.testing.assert_allclose(a[:, 3:5], b[:, 3:5], rtol=3e-7, atol=1e-300)
    # min/max: float32, rounded outwards, so the range only widens.
    assert np.all(a[:, 5] <= b[:, 5]) and np.all(a[:, 6] >= b[:, 6])
    in_range = np.abs(b[:, 5:]) < 3e38
    np.testing.assert_allclose(a[:, 5:][in_range], b[:, 5:][in_range], rtol=1.2e-7)
    assert decode(encode(back)) == back


def test_feedback_without_samples_round_trips() -> None:
    acc = DriftAccumulator(reference())
    for _ in range(5):
        acc.feedback(0.9, True)
    s = DriftSummary(key(), acc.take())
    assert s.body.n == 0 and decode(encode(s)) == s


def test_overflowed_moments_survive_as_unknown() -> None:
    x, p = live(20, seed=2)
    x[:10, 1], x[10:, 1] = 1e200, -1e200
    s = DriftSummary(key(), accumulate(x, p))
    back = decode(encode(s))
    assert np.isnan(back.body.moments[1, 1:5]).all()
    assert back.body.moments[1, 5] == -math.inf and back.body.moments[1, 6] == math.inf


def test_a_typical_window_is_at_most_64_bytes_per_feature() -> None:
    features = 32
    rng = np.random.default_rng(0)
    from fleetcore.drift import build_reference

    ref = build_reference(
        rng.normal(size=(4000, features)),
        rng.dirichlet(np.ones(5), 4000),
        feature_names=[f"f{i}" for i in range(features)],
        class_names=[f"c{i}" for i in range(5)],
    )
    acc = DriftAccumulator(ref)
    acc.update(rng.normal(0.1, 1.1, size=(600, features)), rng.dirichlet(np.ones(5), 600))
    data = encode(DriftSummary(key(reference=ref.digest()), acc.take()))
    assert len(data) / features <= 64


def test_zlib_only_when_smaller() -> None:
    tiny = DriftSummary(key(), DriftCounts.empty(F, K))
    data = encode(tiny)
    assert data[5] == 0 or len(zlib.decompress(data[78:])) > len(data) - 78
    assert decode(data) == tiny
    big = _summary(2000)
    raw = _body(big)
    data = encode(big)
    assert data[5] == (1 if len(zlib.compress(raw, 9)) < len(raw) else 0)


def test_decode_key_reads_only_the_header() -> None:
    data = encode(_summary())
    assert decode_key(data) == key()
    assert decode_key(data[:78] + b"not a body") == key()
    with pytest.raises(ProtocolError):
        decode(data[:78] + b"not a body")


def _malformed() -> list[tuple[str, bytes, str]]:
    s = _summary()
    good = _body(s)
    vector = _vector(s.body)
    cases: list[tuple[str, bytes, str]] = [
        ("magic", _craft(good, magic=b"EFDX"), "magic"),
        ("version", _craft(good, version=2), "version"),
        ("flags", _craft(good, flags=2), "flags"),
        ("zero features", _craft(good, f=0), "feature count"),
        ("too many features", _craft(good, f=4097), "feature count"),
        ("one class", _craft(good, k=1), "class count"),
        ("too many classes", _craft(good, k=1025), "class count"),
        ("release 0", _craft(good, release=0), "release"),
        ("release 2**31", _craft(good, release=2**31), "release"),
        ("seq 0", _craft(good, seq=0), "seq"),
        ("seq 2**31", _craft(good, seq=2**31), "seq"),
        ("length 0", _craft(good, length=0), "length"),
        ("length > 1 day", _craft(good, length=86401), "length"),
        ("unaligned start", _craft(good, start=1_700_000_041), "multiple"),
        ("device id", _craft(good, device=b"Dev 1"), "device id"),
        ("device not ascii", _craft(good, device=b"dev-\xff"), "ASCII"),
        ("model name", _craft(good, model=b"-x"), "model name"),
        ("trailing bytes", _craft(good + b"\0"), "trailing"),
        ("missing moments", _craft(good[:-1]), "truncated"),
        ("compressed trailing", _craft(zlib.compress(good) + b"x", flags=1), "trailing"),
        ("compressed truncated", _craft(zlib.compress(good)[:-3], flags=1), "truncated"),
        ("not zlib", _craft(good, flags=1), "zlib"),
        ("counts truncated", _craft(good[:30]), "truncated"),
    ]
    bumps = {
        "bin count": (0, "feature 0 counts do not sum"),
        "nan count": (18, "feature 0 counts do not sum"),
        "class count": (F * 20, "do not sum|histogram"),
        "histogram": (F * 20 + K + 25, "margin histogram"),
    }
    for what, (index, message) in bumps.items():
        v = vector.copy()
        v[index] += 1
        cases.append((what, _craft(_body(s, v)), message))
    v = vector.copy()
    v[-1] = v[-21] + 1  # correct > labelled in the last bin
    cases.append(("correct > labelled", _craft(_body(s, v)), "more correct"))
    v = vector.copy()
    v[0] = 10**12
    cases.append(("count > n", _craft(_body(s, v)), "exceeds"))
    v = vector.copy()
    v[:] = 0
    v[F * 20 : F * 20 + K] = 2**60  # more samples than a float can count
    cases.append(("huge n", _craft(_body(s, v, moments=b"")), "more than"))
    counts = _wire.encode_varints(vector)
    cases.append(("overlong varint", _craft(b"\x80\x00" + counts[1:]), "shortest"))
    cases.append(("10-byte varint", _craft(b"\xff" * 9 + b"\x01" + counts), "longer"))
    moments = np.frombuffer(_moment_bytes(s.body), dtype=[("r", "u1", 32)]).copy()
    for what, offset, fmt, value, message in [
        ("negative M2", 8, ">d", -1.0, "negative"),
        ("NaN mean only", 0, ">d", math.nan, "all finite or all NaN"),
        ("infinite M3", 16, ">f", math.inf, "all finite or all NaN"),
        ("negative M4", 20, ">f", -1.0, "negative"),
        ("min above max", 24, ">f", 1e30, "min must not exceed max"),
        ("NaN max", 28, ">f", math.nan, "min must not exceed max"),
    ]:
        bad = moments.copy()
        bad[0]["r"][offset : offset + struct.calcsize(fmt)] = np.frombuffer(
            struct.pack(fmt, value), dtype=np.uint8
        )
        cases.append((what, _craft(_body(s, moments=bad.tobytes())), message))
    return cases


@pytest.mark.parametrize(("what", "data", "message"), _malformed(), ids=lambda v: str(v)[:20])
def test_malformed_summaries_are_refused(what: str, data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode(data)


@pytest.mark.parametrize(("what", "data", "message"), _malformed(), ids=lambda v: str(v)[:20])
def test_validate_refuses_what_decode_refuses(what: str, data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        validate(data)


def test_validate_gives_the_key_and_samples() -> None:
    s = _summary(300)
    assert validate(encode(s)) == (s.key, s.body.n) == (key(), 300)


def _verdict(fn: object, data: bytes) -> str:
    try:
        fn(data)  # type: ignore[operator]
    except ProtocolError:
        return "refused"
    return "accepted"


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**16), st.integers(0, 10**6), st.integers(0, 255), st.booleans())
def test_validate_and_decode_agree_on_corrupted_bodies(
    seed: int, where: int, value: int, compressed: bool
) -> None:
    """One byte of a valid body changed (plain or recompressed): both accept or both refuse."""
    s = _summary(50 + seed % 400, seed)
    raw = bytearray(_body(s))
    raw[where % len(raw)] = value
    body = zlib.compress(bytes(raw)) if compressed else bytes(raw)
    data = _craft(body, flags=int(compressed))
    assert _verdict(validate, data) == _verdict(decode, data)


def test_every_truncation_is_refused() -> None:
    data = encode(_summary())
    for size in range(len(data)):
        with pytest.raises(ProtocolError):
            decode(data[:size])
        with pytest.raises(ProtocolError):
            validate(data[:size])


def test_oversize_input_is_refused_before_parsing() -> None:
    data = encode(_summary())
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(data, max_bytes=len(data) - 1)
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(b"EFDS" + b"\0" * MAX_SUMMARY_BYTES)
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_key(data, max_bytes=10)
    with pytest.raises(ProtocolError, match="bytes"):
        decode("EFDS")  # type: ignore[arg-type]


def test_zip_bomb_is_refused_quickly() -> None:
    bomb = zlib.compress(b"\0" * (64 * MAX_BODY_BYTES), 9)
    assert len(bomb) < MAX_SUMMARY_BYTES
    started = time.perf_counter()
    with pytest.raises(ProtocolError, match="inflates beyond"):
        decode(_craft(bomb, flags=1))
    assert time.perf_counter() - started < 0.5


def test_varints_round_trip_at_their_limits() -> None:
    values = np.array([0, 1, 127, 128, 16383, 16384, 2**35, 2**63 - 1], dtype=np.int64)
    data = _wire.encode_varints(values)
    assert data[:5] == b"\x00\x01\x7f\x80\x01"
    back, end = _wire.decode_varints(data, 0, values.size)
    assert end == len(data) and np.array_equal(back, values)
    with pytest.raises(ValueError, match="non-negative"):
        _wire.encode_varints(np.array([-1]))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**63 - 1) | st.integers(0, 300), min_size=1, max_size=200))
def test_varints_round_trip(values: list[int]) -> None:
    a = np.array(values, dtype=np.int64)
    data = _wire.encode_varints(a) + b"\x05"
    back, end = _wire.decode_varints(data, 0, a.size)
    assert end == len(data) - 1 and np.array_equal(back, a)
