"""TelemetryReport: canonical JSON on the wire, parsed strictly, unknown fields kept."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from fleetcore import canonical
from fleetcore.errors import ProtocolError
from fleetcore.telemetry import (
    LATENCY_BUCKET_BOUNDS_NS,
    LATENCY_BUCKETS,
    MAX_TELEMETRY_BYTES,
    TelemetryReport,
    latency_quantile_ns,
)
from tests.unit.control_plane.telemetry.support import telemetry


def wire(**changes: Any) -> bytes:
    obj = telemetry(1, 1).to_dict()
    obj.update(changes)
    return canonical.encode({k: v for k, v in obj.items() if v is not ...})


def test_a_report_round_trips_and_travels_sparse() -> None:
    report = telemetry(1, 7)
    data = report.encode()
    assert json.loads(data)["latency_buckets"] == {"20": 7, "30": 3}
    assert TelemetryReport.decode(data) == report
    assert data == canonical.encode(json.loads(data))  # canonical form


def test_unknown_fields_survive_a_round_trip() -> None:
    decoded = TelemetryReport.decode(wire(gpu_temp_c=61))
    assert decoded.unrecognized == {"gpu_temp_c": 61}
    assert json.loads(decoded.encode())["gpu_temp_c"] == 61


def test_a_report_without_a_model_has_no_release() -> None:
    decoded = TelemetryReport.decode(wire(model=None, release=None, cpu_percent=None))
    assert (decoded.model, decoded.release, decoded.cpu_percent) == (None, None, None)


def test_the_agent_serving_module_uses_the_same_buckets() -> None:
    from agent import serving

    assert serving.LATENCY_BUCKET_BOUNDS_NS is LATENCY_BUCKET_BOUNDS_NS
    assert LATENCY_BUCKETS == len(LATENCY_BUCKET_BOUNDS_NS) + 1 == 106


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "telemetry report"),
        (b'{"_type":"telemetry","_type":"telemetry"}', "duplicate key"),
        (wire(_type="status"), "_type"),
        (wire(seq=0), "seq"),
        (wire(seq=2**31), "seq"),
        (wire(window_start=61), "multiple"),
        (wire(window_s=0), "window_s"),
        (wire(window_s=86_401), "window_s"),
        (wire(release=None), "model and its release"),
        (wire(model="no spaces allowed"), "model"),
        (wire(inferences=-1), "inferences"),
        (wire(errors=True), "errors"),
        (wire(latency_buckets={"106": 1}), "not in 0..105"),
        (wire(latency_buckets={"01": 1}), "not in 0..105"),
        (wire(latency_buckets={"x": 1}), "not an index"),
        (wire(latency_buckets={"3": -1}), "count 0 or more"),
        (wire(latency_buckets=[1, 2]), "object"),
        (wire(device="Not-A-Device"), "device id"),
        (wire(time="yesterday"), "time"),
        (wire(cpu_percent=-1.0), "cpu_percent"),
        (b"[]", "JSON object"),
        (wire(padding="x" * MAX_TELEMETRY_BYTES), "bytes, over"),
    ],
)
def test_malformed_reports_are_refused_with_the_reason(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        TelemetryReport.decode(data)


def test_a_report_must_carry_every_bucket() -> None:
    with pytest.raises(ProtocolError, match="latency buckets"):
        dataclasses.replace(telemetry(1, 1), latency_buckets=(1, 2, 3))


def test_latency_quantiles_from_summed_buckets() -> None:
    counts = [0] * LATENCY_BUCKETS
    assert latency_quantile_ns(counts, 0.95) == 0.0
    counts[0] = 1
    assert latency_quantile_ns(counts, 0.5) == LATENCY_BUCKET_BOUNDS_NS[0]
    counts[10] = 99  # (bounds[9], bounds[10]]
    middle = (LATENCY_BUCKET_BOUNDS_NS[9] * LATENCY_BUCKET_BOUNDS_NS[10]) ** 0.5
    assert latency_quantile_ns(counts, 0.95) == pytest.approx(middle)
    counts[-1] = 1000
    assert latency_quantile_ns(counts, 0.99) == LATENCY_BUCKET_BOUNDS_NS[-1]
    with pytest.raises(ValueError, match="106 buckets"):
        latency_quantile_ns([1, 2], 0.5)
