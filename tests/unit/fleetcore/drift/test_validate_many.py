"""validate_many: a batch of summaries gives, per summary, what validate gives it alone.

Same key and sample count for a good summary; the same refusal, with the same
message, for a malformed one, wherever it sits in the batch and whatever
shapes share the batch.
"""

from __future__ import annotations

import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetcore.drift.encoding import encode, validate, validate_many
from fleetcore.drift.summary import DriftSummary
from fleetcore.errors import ProtocolError

from ._summary_data import accumulate, key, live
from .test_encoding import _body, _craft, _malformed, _summary


def _one(data: bytes) -> object:
    try:
        return validate(data)
    except ProtocolError as exc:
        return f"refused: {exc}"


def _many(items: list[bytes]) -> list[object]:
    return [f"refused: {r}" if isinstance(r, ProtocolError) else r for r in validate_many(items)]


def test_good_and_malformed_summaries_in_one_batch() -> None:
    good = [encode(_summary(n, seed)) for n, seed in ((30, 1), (200, 2), (1000, 3), (0, 4))]
    bad = [data for _, data, _ in _malformed()]
    items = [x for pair in zip(good * 10, bad, strict=False) for x in pair] + good
    assert _many(items) == [_one(x) for x in items]
    assert all(isinstance(r, tuple) for r in _many(good))


def test_shapes_mixed_in_one_batch() -> None:
    x, p = live(40, 5)
    narrow = DriftSummary(key(seq=3), accumulate(x, p))
    items = [encode(_summary(90, 6)), encode(narrow), b"", b"EFDS", encode(_summary(5, 7))]
    items.append(_craft(zlib.compress(_body(_summary(70, 8))), flags=1))
    assert _many(items) == [_one(x) for x in items]
    assert _many([]) == []


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2**16), st.integers(0, 10**6), st.integers(0, 255), st.booleans()),
        min_size=1,
        max_size=6,
    )
)
def test_corrupted_bodies_in_a_batch(changes: list[tuple[int, int, int, bool]]) -> None:
    """One byte of each valid body changed (plain or recompressed), some left intact."""
    items = []
    for seed, where, value, compressed in changes:
        raw = bytearray(_body(_summary(1 + seed % 400, seed)))
        if seed % 3:
            raw[where % len(raw)] = value
        body = zlib.compress(bytes(raw)) if compressed else bytes(raw)
        items.append(_craft(body, flags=int(compressed)))
    assert _many(items) == [_one(x) for x in items]
