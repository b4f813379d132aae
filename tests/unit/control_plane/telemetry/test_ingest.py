"""Telemetry and drift ingestion: one batch mixing every kind of good and bad message.

The store is real (SQLite, migrated); the batch goes through
:class:`ReportIngest`, as the MQTT bridge hands it over, so dispatch by
channel is part of what is tested.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from control_plane.config import TelemetrySettings
from control_plane.devices.ingest import RawMessage, ReportIngest
from control_plane.errors import InvalidInputError, PayloadTooLargeError
from control_plane.telemetry.ingest import TelemetryIngest
from control_plane.telemetry.metrics import IngestMetrics
from fleetcore import canonical
from fleetcore.protocol import Channel, StatusReport, UpdateState, topic
from tests.contract.test_device_store import device_id
from tests.unit.control_plane.telemetry.support import (
    MODEL,
    T0,
    Stocked,
    drift_bytes,
    stocked_store,
    telemetry,
    zip_bomb,
)


class Clock:
    def __init__(self) -> None:
        self.now = T0 + timedelta(hours=1)

    def __call__(self):  # type: ignore[no-untyped-def]
        return self.now


@pytest.fixture
def stocked(tmp_path: Path) -> Iterator[Stocked]:
    yield stocked_store(tmp_path)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def ingests(stocked: Stocked, registry: CollectorRegistry) -> tuple[ReportIngest, TelemetryIngest]:
    clock = Clock()
    windows = TelemetryIngest(stocked.store, clock, TelemetrySettings(), IngestMetrics(registry))
    reports = ReportIngest(stocked.store, clock)
    reports.telemetry = windows
    return reports, windows


def msg(n: int, channel: Channel, payload: bytes) -> RawMessage:
    return RawMessage(topic(device_id(n), channel), payload)


def counted(registry: CollectorRegistry, name: str, **labels: str) -> float:
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_a_mixed_batch_stores_every_valid_window_once(
    stocked: Stocked, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    reports, _ = ingests(stocked, registry)
    status = StatusReport(device_id(1), 1, T0, UpdateState.IDLE).encode()
    secret = b"secret-payload-bytes"
    batch = [
        msg(1, Channel.TELEMETRY, telemetry(1, 1).encode()),
        msg(1, Channel.TELEMETRY, telemetry(1, 1).encode()),  # replay in the batch
        msg(2, Channel.TELEMETRY, telemetry(2, 1).encode()),
        msg(1, Channel.TELEMETRY, b"{" + secret),  # bad JSON
        msg(3, Channel.TELEMETRY, telemetry(2, 5).encode()),  # names device 2, sent by 3
        msg(9, Channel.TELEMETRY, telemetry(9, 1).encode()),  # unknown device
        msg(1, Channel.DRIFT, drift_bytes(1, 1)),
        msg(2, Channel.DRIFT, drift_bytes(2, 1)),
        msg(1, Channel.DRIFT, drift_bytes(1, 1)),  # replay
        msg(1, Channel.DRIFT, b"EFDS" + secret),  # bad binary
        msg(3, Channel.DRIFT, drift_bytes(2, 7)),  # spoofed
        msg(3, Channel.DRIFT, zip_bomb(3, 1)),
        msg(3, Channel.DRIFT, drift_bytes(3, 2, release=2)),  # release without reference
        msg(3, Channel.DRIFT, drift_bytes(3, 3, release=5)),  # unknown release
        msg(3, Channel.DRIFT, drift_bytes(3, 4, reference="ab" * 32)),  # wrong reference
        msg(3, Channel.DRIFT, b"\0" * (64 * 1024 + 1)),  # oversize
        msg(1, Channel.STATUS, status),
    ]
    reports.mqtt(batch)
    store = stocked.store
    assert [w.device_id for w in store.drift_windows(MODEL)] == [device_id(1), device_id(2)]
    assert store.telemetry_by_release(MODEL, since=T0)[1].windows == 2
    assert store.list_reports(device_id(1))[0].seq == 1  # the status report went its way
    assert counted(registry, "edgefleet_ingest_received_total", channel="telemetry") == 6
    assert counted(registry, "edgefleet_ingest_received_total", channel="drift") == 10
    assert counted(registry, "edgefleet_ingest_stored_total") == 4
    assert counted(registry, "edgefleet_ingest_duplicates_total") == 2
    dropped = {
        reason: counted(registry, "edgefleet_ingest_dropped_total", reason=reason)
        for reason in (
            "malformed",
            "spoofed",
            "unknown_device",
            "no_reference",
            "unknown_release",
            "wrong_reference",
            "oversize",
        )
    }
    assert dropped == {
        "malformed": 3,  # bad JSON, bad binary, zip bomb
        "spoofed": 2,
        "unknown_device": 1,
        "no_reference": 1,
        "unknown_release": 1,
        "wrong_reference": 1,
        "oversize": 1,
    }
    assert "edgefleet/v1/devices/" in caplog.text
    assert secret.decode() not in caplog.text  # payloads are never logged


def test_replays_in_later_batches_are_duplicates(
    stocked: Stocked, registry: CollectorRegistry
) -> None:
    reports, _ = ingests(stocked, registry)
    batch = [msg(1, Channel.DRIFT, drift_bytes(1, seq)) for seq in (1, 2)]
    reports.mqtt(batch)
    reports.mqtt(batch)
    assert len(stocked.store.drift_windows(MODEL)) == 2
    assert counted(registry, "edgefleet_ingest_duplicates_total", channel="drift") == 2


def test_a_device_enrolled_after_its_first_refusal_is_accepted(
    stocked: Stocked, registry: CollectorRegistry
) -> None:
    from tests.contract.test_device_store import device

    reports, _ = ingests(stocked, registry)
    reports.mqtt([msg(4, Channel.TELEMETRY, telemetry(4, 1).encode())])
    stocked.store.add_device(device(4))
    reports.mqtt([msg(4, Channel.TELEMETRY, telemetry(4, 1).encode())])
    assert stocked.store.telemetry_by_release(MODEL, since=T0)[1].devices == 1


def test_windows_far_in_the_future_are_refused(
    stocked: Stocked, registry: CollectorRegistry
) -> None:
    reports, _ = ingests(stocked, registry)
    later = int((T0 + timedelta(days=3)).timestamp()) // 60 * 60
    reports.mqtt([msg(1, Channel.TELEMETRY, telemetry(1, 1, window_start=later).encode())])
    reports.mqtt([msg(1, Channel.DRIFT, drift_bytes(1, 1, start=60 * 2**34))])
    assert counted(registry, "edgefleet_ingest_dropped_total", reason="future_window") == 2


def test_windows_older_than_raw_retention_are_refused(
    stocked: Stocked, registry: CollectorRegistry
) -> None:
    # Such a window may already be rolled up, where (device, seq) is not unique any more.
    reports, _ = ingests(stocked, registry)
    older = int((T0 - timedelta(days=8)).timestamp()) // 60 * 60
    reports.mqtt([msg(1, Channel.TELEMETRY, telemetry(1, 1, window_start=older).encode())])
    reports.mqtt([msg(1, Channel.DRIFT, drift_bytes(1, 1, start=older))])
    assert counted(registry, "edgefleet_ingest_dropped_total", reason="expired_window") == 2
    assert stocked.store.drift_windows(MODEL) == []


def test_without_telemetry_ingest_the_channels_are_ignored(stocked: Stocked) -> None:
    reports = ReportIngest(stocked.store, Clock())
    reports.mqtt([msg(1, Channel.DRIFT, drift_bytes(1, 1))])
    assert reports.stats.snapshot()["ignored"] == 1
    assert stocked.store.drift_windows(MODEL) == []


# -- HTTP ------------------------------------------------------------------------------


def test_http_telemetry_stores_a_batch_and_reports_duplicates(
    stocked: Stocked, registry: CollectorRegistry
) -> None:
    _, windows = ingests(stocked, registry)
    body = canonical.encode({"reports": [telemetry(1, s).to_dict() for s in (1, 2)]})
    first = windows.telemetry_http(device_id(1), body)
    again = windows.telemetry_http(device_id(1), body)
    assert (first.stored, first.duplicates, again.stored, again.duplicates) == (2, 0, 0, 2)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[", "not canonical JSON"),
        (canonical.encode({"reports": []}), "1 to 500"),
        (canonical.encode({"reports": [{"_type": "telemetry"}]}), "report 0"),
    ],
)
def test_http_telemetry_refuses_a_bad_body_whole(
    stocked: Stocked, registry: CollectorRegistry, body: bytes, message: str
) -> None:
    _, windows = ingests(stocked, registry)
    with pytest.raises(InvalidInputError, match=message):
        windows.telemetry_http(device_id(1), body)


def test_http_telemetry_of_another_device_is_refused(
    stocked: Stocked, registry: CollectorRegistry
) -> None:
    _, windows = ingests(stocked, registry)
    body = canonical.encode({"reports": [telemetry(1, 1).to_dict(), telemetry(2, 1).to_dict()]})
    with pytest.raises(InvalidInputError, match=r"report 1.*names device"):
        windows.telemetry_http(device_id(1), body)
    assert stocked.store.telemetry_by_release(MODEL, since=T0) == {}


def test_http_drift_refusals(stocked: Stocked, registry: CollectorRegistry) -> None:
    _, windows = ingests(stocked, registry)
    assert windows.drift_http(device_id(1), drift_bytes(1, 1)).stored == 1
    with pytest.raises(PayloadTooLargeError):
        windows.drift_http(device_id(1), b"\0" * (64 * 1024 + 1))
    with pytest.raises(InvalidInputError, match="not the one signed"):
        windows.drift_http(device_id(1), drift_bytes(1, 2, reference="cd" * 32))
    with pytest.raises(InvalidInputError, match="names device"):
        windows.drift_http(device_id(1), drift_bytes(2, 2))
    with pytest.raises(InvalidInputError):
        windows.drift_http(device_id(1), zip_bomb(1, 3))
