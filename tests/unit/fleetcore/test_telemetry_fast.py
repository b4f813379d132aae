"""The telemetry decoder's fast path: it accepts exactly what the generic reader accepts.

Each case is a report mutated at the JSON level (a field dropped, retyped,
out of range, duplicated, an unknown field, whitespace, non-finite and huge
numbers, odd times); :meth:`TelemetryReport.decode` (fast path first) must
give the same report, or the same refusal with the same message, as the
generic path alone (:func:`fleetcore.canonical.decode` then the field reader).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetcore import canonical
from fleetcore.errors import EdgefleetError
from fleetcore.metadata._fields import _TIME_FORMAT, parse_time
from fleetcore.telemetry import (
    LATENCY_BUCKETS,
    MAX_TELEMETRY_BYTES,
    TelemetryReport,
    _fast_object,
    _fast_report,
)

T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)


def _base() -> dict[str, Any]:
    buckets = [0] * LATENCY_BUCKETS
    buckets[30], buckets[34] = 50, 14
    report = TelemetryReport(
        device="dev-0001",
        seq=7,
        time=T0,
        window_start=1_740_787_260,
        window_s=60,
        model="sensor",
        release=1,
        inferences=64,
        errors=1,
        input_errors=0,
        latency_buckets=tuple(buckets),
        cpu_percent=12.5,
        rss_bytes=50 << 20,
        disk_free_bytes=8 << 30,
    )
    return report.to_dict()


def _generic(data: bytes) -> TelemetryReport | str:
    """What decode answered before it had a fast path."""
    try:
        obj = canonical.decode(data, max_bytes=MAX_TELEMETRY_BYTES)
    except EdgefleetError as exc:
        return f"ProtocolError: telemetry report: {exc}"
    try:
        return TelemetryReport._from_fields(obj)
    except EdgefleetError as exc:
        return f"{type(exc).__name__}: {exc}"


def _decoded(data: bytes) -> TelemetryReport | str:
    try:
        return TelemetryReport.decode(data)
    except EdgefleetError as exc:
        return f"{type(exc).__name__}: {exc}"


def _same(data: bytes) -> None:
    fast, generic = _decoded(data), _generic(data)
    assert fast == generic
    if isinstance(fast, TelemetryReport):
        assert isinstance(generic, TelemetryReport)
        assert fast.unrecognized == generic.unrecognized
        assert fast.time.tzinfo is generic.time.tzinfo
        assert type(fast.cpu_percent) is type(generic.cpu_percent)


VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    1,
    60,
    2**31,
    2**62,
    2**62 + 1,
    2**63,
    10**400,
    0.5,
    -0.0,
    12.0,
    "",
    "x",
    "dev-0001",
    "2025-03-01T00:00:00Z",
    [],
    {},
    {"30": 1},
    {"106": 1},
    {"05": 1},
    {"1": -1},
    {"1": True},
]


@pytest.mark.parametrize("field", sorted(_base()))
@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_every_field_with_every_kind_of_value(field: str, value: Any) -> None:
    obj = _base()
    obj[field] = value
    _same(canonical.encode(obj))


@pytest.mark.parametrize("field", sorted(_base()))
def test_every_field_missing(field: str) -> None:
    obj = _base()
    del obj[field]
    _same(canonical.encode(obj))


@pytest.mark.parametrize(
    "data",
    [
        canonical.encode({**_base(), "gpu_temp_c": 61}),  # unknown field: kept
        canonical.encode({**_base(), "model": None, "release": None}),
        canonical.encode({**_base(), "window_start": 1_740_787_261}),  # not aligned
        canonical.encode({**_base(), "release": None}),  # model without release
        canonical.encode({**_base(), "model": "-bad"}),
        canonical.encode({**_base(), "device": "Dev 1"}),
        b" " + canonical.encode(_base()),  # not canonical whitespace: still accepted
        canonical.encode(_base()).replace(b'"errors":1', b'"errors":1,"errors":1'),
        canonical.encode(_base()).replace(b'"30":50', b'"30":50,"30":5'),
        canonical.encode(_base()).replace(b"12.5", b"NaN"),
        canonical.encode(_base()).replace(b"12.5", b"Infinity"),
        canonical.encode(_base()).replace(b"12.5", b"1e999"),
        canonical.encode(_base()).replace(b"12.5", b"1" * 400),  # too big for a float
        canonical.encode(_base()).replace(b'"sensor"', b'"sens\\u006fr"'),
        canonical.encode(_base()).replace(b"sensor", b"s\xc3\xa9nsor"),
        canonical.encode(_base()).replace(b"sensor", b"s\xffnsor"),  # not UTF-8
        b"\xef\xbb\xbf" + canonical.encode(_base()),  # a BOM
        canonical.encode(_base())[:-1] + b',"zz":' + b"[" * 40 + b"]" * 40 + b"}",  # deep
        b"[]",
        b"null",
        b"{}",
    ],
)
def test_odd_documents(data: bytes) -> None:
    _same(data)


@pytest.mark.parametrize(
    "text",
    [
        "2025-03-01T00:00:00Z",
        "2024-02-29T23:59:59Z",
        "2025-02-29T00:00:00Z",
        "2025-13-01T00:00:00Z",
        "2025-00-01T00:00:00Z",
        "2025-03-01T24:00:00Z",
        "2025-03-01T00:60:00Z",
        "2025-03-01T00:00:60Z",
        "0000-01-01T00:00:00Z",
        "2025-3-1T0:0:0Z",  # strptime's own leniency, kept
        "2025-03-01T00:00:00",
        "2025-03-01 00:00:00Z",
        "2025-03-01T00:00:00+00:00",
        "２０２５-03-01T00:00:00Z",  # noqa: RUF001 - non-ASCII digits
    ],
)
def test_times_parse_as_strptime_parses_them(text: str) -> None:
    try:
        expected: datetime | str = datetime.strptime(text, _TIME_FORMAT).replace(
            tzinfo=timezone.utc
        )
    except ValueError:
        expected = "refused"
    try:
        found: datetime | str = parse_time(text, "t")
    except EdgefleetError:
        found = "refused"
    assert found == expected
    obj = _base()
    obj["time"] = text
    _same(canonical.encode(obj))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_single_byte_corruption(data: st.DataObject) -> None:
    """Any one byte of a canonical report changed: both paths agree."""
    raw = bytearray(canonical.encode(_base()))
    where = data.draw(st.integers(0, len(raw) - 1))
    raw[where] = data.draw(st.integers(0, 255))
    _same(bytes(raw))


def test_the_fast_path_takes_the_canonical_report() -> None:
    data = canonical.encode(_base())
    fast = _fast_report(_fast_object(data))
    assert fast is not None and fast == _generic(data)
    assert _fast_report(_fast_object(canonical.encode({**_base(), "x": 1}))) is None
