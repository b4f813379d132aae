"""The wire contract: round trips, topic parsing, and hostile payloads refused cleanly."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetcore import canonical
from fleetcore.errors import ProtocolError
from fleetcore.protocol import (
    Capabilities,
    Channel,
    DesiredState,
    Installed,
    Presence,
    StatusReport,
    UpdateState,
    check_device_id,
    check_labels,
    parse_topic,
    subscription,
    topic,
)
from tests.support.repo import RepoSim

T = datetime(2026, 11, 22, 10, 0, 0, tzinfo=timezone.utc)
REL = Installed("sensor", 3, "ab" * 32)
SIM = RepoSim.create()


def report(**changes: Any) -> StatusReport:
    fields: dict[str, Any] = {
        "device": "dev-abc",
        "seq": 7,
        "time": T,
        "state": UpdateState.REVERTED,
        "target": REL,
        "assignment_sequence": 4,
        "active": Installed("sensor", 2, "cd" * 32),
        "previous": None,
        "reason": "smoke",
        "message": "outputs differ",
        "agent_version": "0.1.0",
    }
    fields.update(changes)
    return StatusReport(**fields)


@pytest.mark.parametrize("device", ["dev-abc", "a1b", "x" * 64, "dev_1-2"])
def test_valid_device_ids(device: str) -> None:
    assert check_device_id(device) == device


@pytest.mark.parametrize(
    "device", ["", "ab", "Dev-abc", "dev/abc", "dev+", "dev#", "-dev", "x" * 65, "dev abc", "dév"]
)
def test_device_ids_that_could_escape_a_topic_are_refused(device: str) -> None:
    with pytest.raises(ProtocolError):
        check_device_id(device)


def test_topics_round_trip() -> None:
    for channel in Channel:
        assert parse_topic(topic("dev-abc", channel)) == ("dev-abc", channel)
    assert subscription(Channel.STATUS) == "edgefleet/v1/devices/+/status"
    assert (
        subscription(Channel.STATUS, shared_group="cp") == "$share/cp/edgefleet/v1/devices/+/status"
    )


@pytest.mark.parametrize(
    "name",
    [
        "edgefleet/v1/devices/dev-abc",
        "edgefleet/v1/devices/dev-abc/status/extra",
        "edgefleet/v1/devices/dev-abc/unknown",
        "edgefleet/v1/devices/+/status",
        "other/v1/devices/dev-abc/status",
        "edgefleet/v1/devices//status",
    ],
)
def test_malformed_topics_are_refused(name: str) -> None:
    with pytest.raises(ProtocolError):
        parse_topic(name)


def test_status_report_round_trip_keeps_unknown_fields() -> None:
    original = report()
    obj = {**original.to_dict(), "future_field": {"x": 1}}
    decoded = StatusReport.decode(canonical.encode(obj))
    assert decoded == original
    assert decoded.to_dict()["future_field"] == {"x": 1}


@given(seq=st.integers(1, 2**31 - 1), state=st.sampled_from(list(UpdateState)))
@settings(max_examples=50)
def test_status_report_round_trips(seq: int, state: UpdateState) -> None:
    original = report(seq=seq, state=state)
    assert StatusReport.decode(original.encode()) == original


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"seq": 0}, "seq"),
        ({"seq": 2**31}, "seq"),
        ({"assignment_sequence": 2**40}, "assignment_sequence"),
        ({"target": {"model": "m", "release": 2**40, "sha256": "ab" * 32}}, "release"),
        ({"seq": "7"}, "seq"),
        ({"state": "exploded"}, "unknown update state"),
        ({"device": "dev/other"}, "invalid device id"),
        ({"_type": "presence"}, "_type"),
        ({"time": "yesterday"}, "time"),
        ({"target": {"model": "m"}}, "release"),
    ],
)
def test_malformed_status_reports_say_what_is_wrong(change: dict[str, Any], words: str) -> None:
    obj = {**report().to_dict(), **change}
    with pytest.raises(ProtocolError, match=words):
        StatusReport.decode(canonical.encode(obj))


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[1,2]",
        b'{"a":1,"a":2}',
        b'{"x": NaN}',
        b"\xff\xfe",
        b"[" * 100 + b"]" * 100,
        b'{"pad":"' + b"x" * (70 * 1024) + b'"}',
    ],
)
def test_hostile_payloads_raise_protocol_error_only(payload: bytes) -> None:
    for kind in (StatusReport, Presence, DesiredState):
        with pytest.raises(ProtocolError):
            kind.decode(payload)


def test_long_reason_and_message_are_truncated() -> None:
    obj = {**report().to_dict(), "reason": "r" * 500, "message": "m" * 5000}
    decoded = StatusReport.decode(canonical.encode(obj))
    assert decoded.reason is not None
    assert len(decoded.reason) == 64
    assert decoded.message is not None
    assert len(decoded.message) == 2000


def test_presence_round_trip() -> None:
    for presence in (Presence("dev-abc", True, T, "0.1.0"), Presence("dev-abc", False)):
        assert Presence.decode(presence.encode()) == presence


def test_presence_online_must_be_boolean() -> None:
    obj = {**Presence("dev-abc", True).to_dict(), "online": 1}
    with pytest.raises(ProtocolError, match="online"):
        Presence.decode(canonical.encode(obj))


def test_desired_state_carries_envelopes_byte_for_byte() -> None:
    manifest = SIM.manifest()
    desired = DesiredState(SIM.assignment_bytes(manifest), SIM.release_bytes(manifest))
    decoded = DesiredState.decode(desired.encode())
    assert decoded == desired


def test_desired_state_refuses_a_non_envelope() -> None:
    body = canonical.encode({"_type": "desired", "assignment": {"x": 1}, "manifest": {}})
    with pytest.raises(ProtocolError, match="desired state"):
        DesiredState.decode(body)


def test_capabilities_round_trip() -> None:
    caps = Capabilities(
        runtimes={"onnxruntime": "1.23.0"},
        formats=("onnx",),
        onnx_opsets=(7, 23),
        arch="aarch64",
        ram_bytes=4 << 30,
        disk_free_bytes=10 << 30,
        accelerators=("coral-edgetpu",),
        os="Debian 12",
        python="3.11.7",
        agent_version="0.1.0",
    )
    assert Capabilities.from_dict(caps.to_dict()) == caps


@pytest.mark.parametrize("opsets", [[9], [20, 7], ["7", "9"], [True, 9]])
def test_capabilities_refuse_bad_opset_ranges(opsets: list[Any]) -> None:
    obj = {
        "runtimes": {},
        "formats": [],
        "onnx_opsets": opsets,
        "arch": "x86_64",
        "ram_bytes": 1,
        "disk_free_bytes": 1,
    }
    with pytest.raises(ProtocolError):
        Capabilities.from_dict(obj)


def test_labels() -> None:
    assert check_labels({"site": "a", "hw": "rpi4"}) == {"hw": "rpi4", "site": "a"}
    for bad in ({"Site": "a"}, {"site": "a b"}, {"site": 1}, [], {f"k{i}": "v" for i in range(65)}):
        with pytest.raises(ProtocolError):
            check_labels(bad)
