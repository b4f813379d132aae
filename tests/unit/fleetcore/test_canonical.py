"""Canonical JSON: deterministic bytes, strict parsing of hostile input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetcore import canonical
from fleetcore.errors import MetadataError

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_round_trip_is_stable(value: object) -> None:
    encoded = canonical.encode(value)
    assert canonical.encode(canonical.decode(encoded)) == encoded


@given(st.dictionaries(st.text(), st.integers(), max_size=8))
def test_key_order_does_not_matter(value: dict[str, int]) -> None:
    reordered = dict(reversed(list(value.items())))
    assert canonical.encode(value) == canonical.encode(reordered)


def test_known_encoding() -> None:
    assert (
        canonical.encode({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'.encode()
    )


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1, "a": 2}',  # duplicate key: two readings
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": 1e999}',
        b"\xff\xfe{}",  # not UTF-8
        b'{"a": ',  # truncated
        b"[" * 100_000 + b"]" * 100_000,  # hostile nesting
        b"[" * 40 + b"]" * 40,  # deeper than allowed
        b"1" * 5000,  # integer past the interpreter's digit limit
    ],
    ids=[
        "duplicate",
        "nan",
        "infinity",
        "overflow",
        "not-utf8",
        "truncated",
        "deep-recursion",
        "too-deep",
        "huge-int",
    ],
)
def test_hostile_json_is_refused(data: bytes) -> None:
    with pytest.raises(MetadataError):
        canonical.decode(data)


def test_oversize_document_is_refused_before_parsing() -> None:
    with pytest.raises(MetadataError, match="more than"):
        canonical.decode(b" " * 11, max_bytes=10)


@pytest.mark.parametrize("value", [float("nan"), {1: "non-string key"}, object()])
def test_unencodable_values_are_refused(value: object) -> None:
    with pytest.raises(MetadataError):
        canonical.encode(value)


@given(st.binary(max_size=256))
def test_arbitrary_bytes_raise_only_metadata_error(data: bytes) -> None:
    try:
        canonical.decode(data)
    except MetadataError:
        pass
    else:
        json.loads(data)  # whatever we accepted, the standard parser agrees with
