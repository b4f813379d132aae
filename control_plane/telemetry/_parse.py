"""Parsing one telemetry report or drift summary into the record the store keeps.

Every refusal is a :class:`RefusedError` carrying a short ``reason`` (a metrics
label: ``oversize``, ``malformed``, ``spoofed``, ``future_window``, ...) and a
one-line message that names what was wrong, never the payload itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from control_plane.store.telemetry_records import DriftWindowRecord, TelemetryWindowRecord
from fleetcore.drift.encoding import MAX_SUMMARY_BYTES, validate_many
from fleetcore.drift.encoding import validate as validate_summary
from fleetcore.drift.summary import WindowKey
from fleetcore.errors import EdgefleetError
from fleetcore.telemetry import (
    MAX_TELEMETRY_BYTES,
    MAX_WINDOW_START,
    TelemetryReport,
    sparse_buckets,
)

OVERSIZE = "oversize"
MALFORMED = "malformed"
SPOOFED = "spoofed"
FUTURE_WINDOW = "future_window"
EXPIRED_WINDOW = "expired_window"
UNKNOWN_DEVICE = "unknown_device"
UNKNOWN_RELEASE = "unknown_release"
NO_REFERENCE = "no_reference"
WRONG_REFERENCE = "wrong_reference"
REFUSED_BY_DATABASE = "refused_by_database"
BAD_TOPIC = "bad_topic"
#: Every reason a message is dropped for (the metrics' label values).
REASONS = (
    BAD_TOPIC,
    OVERSIZE,
    MALFORMED,
    SPOOFED,
    FUTURE_WINDOW,
    EXPIRED_WINDOW,
    UNKNOWN_DEVICE,
    UNKNOWN_RELEASE,
    NO_REFERENCE,
    WRONG_REFERENCE,
    REFUSED_BY_DATABASE,
)


class RefusedError(Exception):
    """A message the control plane will not store, and why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class WindowBounds:
    """Window starts a message may carry, relative to now.

    ``max_age_s`` is the raw retention: an older window may already have been
    rolled up, where ``(device, seq)`` is no longer unique, so taking it again
    could count it twice. It is refused instead.
    """

    max_future_s: float
    max_age_s: float = math.inf


def _window(start: int, length: int, now: datetime, bounds: WindowBounds) -> datetime:
    if start > MAX_WINDOW_START or start > now.timestamp() + bounds.max_future_s:
        raise RefusedError(FUTURE_WINDOW, f"window starting at {start} is too far in the future")
    if start < now.timestamp() - bounds.max_age_s:
        raise RefusedError(
            EXPIRED_WINDOW, f"window starting at {start} is older than the raw retention"
        )
    return datetime.fromtimestamp(start, timezone.utc)


def _same_device(named: str, sender: str, what: str) -> None:
    if named != sender:
        raise RefusedError(SPOOFED, f"the {what} names device {named}, but {sender} sent it")


def telemetry_record(
    report: TelemetryReport, sender: str, now: datetime, bounds: WindowBounds
) -> TelemetryWindowRecord:
    _same_device(report.device, sender, "telemetry report")
    return TelemetryWindowRecord(
        device_id=report.device,
        seq=report.seq,
        time=report.time,
        window_start=_window(report.window_start, report.window_s, now, bounds),
        window_s=report.window_s,
        model=report.model,
        release=report.release,
        inferences=report.inferences,
        errors=report.errors,
        input_errors=report.input_errors,
        # Canonical JSON (sorted keys, no spaces) of string keys and integers, which
        # json.dumps writes as fleetcore.canonical.encode does, without its type walk.
        latency=json.dumps(
            sparse_buckets(report.latency_buckets), sort_keys=True, separators=(",", ":")
        ),
        cpu_percent=report.cpu_percent,
        rss_bytes=report.rss_bytes,
        disk_free_bytes=report.disk_free_bytes,
        received_at=now,
    )


def parse_telemetry(
    payload: bytes, sender: str, now: datetime, bounds: WindowBounds
) -> TelemetryWindowRecord:
    if len(payload) > MAX_TELEMETRY_BYTES:
        raise RefusedError(OVERSIZE, f"{len(payload)} bytes, over {MAX_TELEMETRY_BYTES}")
    try:
        report = TelemetryReport.decode(payload)
    except EdgefleetError as exc:
        raise RefusedError(MALFORMED, str(exc)) from exc
    return telemetry_record(report, sender, now, bounds)


def parse_drift(
    payload: bytes, sender: str, now: datetime, bounds: WindowBounds
) -> DriftWindowRecord:
    """A drift summary, checked in full (so a bad body or a zip bomb is refused here)
    but not built: the store keeps the bytes, and needs only the key and sample count."""
    if len(payload) > MAX_SUMMARY_BYTES:
        raise RefusedError(OVERSIZE, f"{len(payload)} bytes, over {MAX_SUMMARY_BYTES}")
    try:
        key, samples = validate_summary(payload)
    except (EdgefleetError, ValueError) as exc:
        raise RefusedError(MALFORMED, str(exc)) from exc
    return drift_record(key, samples, payload, sender, now, bounds)


def parse_drifts(
    items: Sequence[tuple[bytes, str]], now: datetime, bounds: WindowBounds
) -> list[DriftWindowRecord | RefusedError]:
    """:func:`parse_drift` for each ``(payload, sender)``, in order: the record or the
    refusal. The summaries are checked together (:func:`validate_many`), with the
    same refusals as one by one."""
    results: list[DriftWindowRecord | RefusedError | None] = []
    sized: list[tuple[int, bytes, str]] = []
    for payload, sender in items:
        if len(payload) > MAX_SUMMARY_BYTES:
            size = f"{len(payload)} bytes, over {MAX_SUMMARY_BYTES}"
            results.append(RefusedError(OVERSIZE, size))
            continue
        sized.append((len(results), payload, sender))
        results.append(None)
    checked = validate_many([payload for _, payload, _ in sized])
    for (index, payload, sender), outcome in zip(sized, checked, strict=True):
        if isinstance(outcome, EdgefleetError):
            results[index] = RefusedError(MALFORMED, str(outcome))
            continue
        try:
            results[index] = drift_record(*outcome, payload, sender, now, bounds)
        except RefusedError as refused:
            results[index] = refused
    return [r for r in results if r is not None]


def drift_record(
    key: WindowKey, samples: int, payload: bytes, sender: str, now: datetime, bounds: WindowBounds
) -> DriftWindowRecord:
    _same_device(key.device, sender, "drift summary")
    return DriftWindowRecord(
        device_id=key.device,
        seq=key.seq,
        model=key.model,
        release=key.release,
        reference=key.reference,
        window_start=_window(key.start, key.length, now, bounds),
        window_s=key.length,
        samples=samples,
        payload=bytes(payload),
        received_at=now,
    )


__all__ = [
    "REASONS",
    "RefusedError",
    "WindowBounds",
    "drift_record",
    "parse_drift",
    "parse_drifts",
    "parse_telemetry",
    "telemetry_record",
]
