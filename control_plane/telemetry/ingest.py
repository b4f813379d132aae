"""Ingesting telemetry reports and drift summaries, from MQTT and HTTP, by one code path.

Theory of operation: every message is parsed strictly (:mod:`._parse`:
:class:`fleetcore.telemetry.TelemetryReport`, or a drift summary put through
every check of :func:`fleetcore.drift.encoding.validate`, so bad bodies and
zip bombs are caught here), then checked against the store: the sending device must be
enrolled and active, and a drift summary's reference digest must be the one
signed for its release. What passes is written in one transaction per batch
(:meth:`Store.add_telemetry_windows`, :meth:`Store.add_drift_windows`), which
keeps each ``(device, seq)`` once per channel: a replay or a redelivery is
counted as a duplicate, never stored twice.

* MQTT (:meth:`TelemetryIngest.mqtt`, called by the bridge through
  :class:`~control_plane.devices.ingest.ReportIngest`): each refused message
  is counted by reason, logged with its topic and the reason (never the
  payload) and dropped; the rest of the batch is stored. If the database
  refuses the batch as a whole (a value a column cannot hold), the batch is
  written again row by row and only the refused rows are dropped. Any other
  database failure raises, so the bridge keeps the batch unacknowledged and
  retries it.
* HTTP (:meth:`telemetry_http`, :meth:`drift_http`): the device is
  authenticated, so a refusal is its own fault and answered at once (422, or
  413 when too large), and nothing of the request is stored.

Caches: active device ids and release reference digests are read once and
reused for :data:`CACHE_S` seconds; a device or release not found is looked
up again on its next message, so a newly enrolled device or a new release is
never refused for long. Thread-safe: the bridge's ingester and HTTP worker
threads share one instance.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from control_plane.config import TelemetrySettings
from control_plane.errors import (
    ControlPlaneError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
)
from control_plane.store import (
    BatchResult,
    DriftWindowRecord,
    Store,
    TelemetryWindowRecord,
)
from control_plane.telemetry import _parse
from control_plane.telemetry._parse import RefusedError
from control_plane.telemetry.metrics import IngestMetrics
from fleetcore import canonical
from fleetcore.errors import EdgefleetError
from fleetcore.protocol import Channel, topic
from fleetcore.telemetry import MAX_TELEMETRY_BYTES, TelemetryReport

log = logging.getLogger("edgefleet.ingest")
#: Seconds a device's or a release's lookup is reused.
CACHE_S = 60.0
#: Telemetry reports per HTTP request.
MAX_HTTP_REPORTS = 500
TELEMETRY = Channel.TELEMETRY.value
DRIFT = Channel.DRIFT.value
W = TypeVar("W", TelemetryWindowRecord, DriftWindowRecord)


class _Lookups:
    """Active devices and release reference digests, cached (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._devices: dict[str, float] = {}
        self._references: dict[tuple[str, int], tuple[float, str | None, bool]] = {}

    def active(self, device_ids: set[str]) -> set[str]:
        now = time.monotonic()
        with self._lock:
            known = {d for d in device_ids if self._devices.get(d, 0.0) > now}
        missing = device_ids - known
        if missing:
            found = self.store.active_device_ids(missing)
            with self._lock:
                for device in found:
                    self._devices[device] = now + CACHE_S
            known |= found
        return known

    def reference(self, model: str, release: int) -> tuple[str | None, bool]:
        """``(digest, release exists)``."""
        now = time.monotonic()
        with self._lock:
            cached = self._references.get((model, release))
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        try:
            digest, exists = self.store.drift_reference(model, release), True
        except NotFoundError:
            digest, exists = None, False
        with self._lock:
            # Unknown releases are asked again soon; a release's reference never changes.
            self._references[(model, release)] = (
                now + (CACHE_S if exists else 5.0),
                digest,
                exists,
            )
        return digest, exists


class TelemetryIngest:
    def __init__(
        self,
        store: Store,
        clock: Callable[[], datetime],
        settings: TelemetrySettings,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.metrics = metrics
        self.lookups = _Lookups(store)
        self.bounds = _parse.WindowBounds(
            settings.max_future_s, settings.raw_retention_days * 86_400
        )

    # -- MQTT ------------------------------------------------------------------------------
    def mqtt(self, messages: Sequence[tuple[str, str, Channel, bytes]]) -> None:
        """Store ``(topic, device, channel, payload)`` messages of the telemetry and drift
        channels; refused ones are counted and dropped. Raises only when the database fails."""
        now = self.clock()
        future = self.bounds
        telemetry: list[TelemetryWindowRecord] = []
        drift: list[DriftWindowRecord] = []
        received = {TELEMETRY: 0, DRIFT: 0}
        summaries: list[tuple[str, str, bytes]] = []
        for name, device, channel, payload in messages:
            received[channel.value] += 1
            if channel is not Channel.TELEMETRY:
                summaries.append((name, device, payload))  # checked together, below
                continue
            try:
                telemetry.append(_parse.parse_telemetry(payload, device, now, future))
            except RefusedError as refused:
                self._drop(TELEMETRY, refused, name)
        parsed = _parse.parse_drifts([(p, d) for _, d, p in summaries], now, future)
        for (name, _, _), outcome in zip(summaries, parsed, strict=True):
            if isinstance(outcome, RefusedError):
                self._drop(DRIFT, outcome, name)
            else:
                drift.append(outcome)
        for channel_name, count in received.items():
            if count:  # counted per batch: one metrics update, not one per message
                self._count(channel_name, received=count)
        telemetry = self._checked(Channel.TELEMETRY, telemetry)
        drift = self._checked(Channel.DRIFT, drift)
        self._write(telemetry, drift, now)

    def _checked(self, channel: Channel, records: list[W]) -> list[W]:
        if not records:
            return records
        active = self.lookups.active({r.device_id for r in records})
        kept: list[W] = []
        for record in records:
            try:
                if record.device_id not in active:
                    raise RefusedError(_parse.UNKNOWN_DEVICE, "no active device has this id")
                if isinstance(record, DriftWindowRecord):
                    self._check_reference(record)
            except RefusedError as refused:
                self._drop(channel.value, refused, topic(record.device_id, channel))
                continue
            kept.append(record)
        return kept

    def _check_reference(self, record: DriftWindowRecord) -> None:
        digest, exists = self.lookups.reference(record.model, record.release)
        name = f"release {record.model} #{record.release}"
        if not exists:
            raise RefusedError(_parse.UNKNOWN_RELEASE, f"{name} is not known here")
        if digest is None:
            raise RefusedError(_parse.NO_REFERENCE, f"{name} has no signed drift reference")
        if digest != record.reference:
            raise RefusedError(
                _parse.WRONG_REFERENCE,
                f"the summary's drift reference {record.reference[:16]}… is not the one "
                f"signed for {name} ({digest[:16]}…)",
            )

    def _write(
        self,
        telemetry: list[TelemetryWindowRecord],
        drift: list[DriftWindowRecord],
        now: datetime,
    ) -> None:
        if not telemetry and not drift:
            return
        started = time.perf_counter()
        try:
            with self.store.transaction() as tx:
                results = (tx.add_telemetry_windows(telemetry), tx.add_drift_windows(drift))
        except InvalidInputError as exc:
            log.warning("a batch was refused by the database (%s); storing row by row", exc)
            results = (self._one_by_one(TELEMETRY, telemetry), self._one_by_one(DRIFT, drift))
        elapsed = time.perf_counter() - started
        if telemetry:
            self._stored(TELEMETRY, telemetry, results[0], now, elapsed)
        if drift:
            self._stored(DRIFT, drift, results[1], now, elapsed)

    def _one_by_one(self, channel: str, records: Sequence[W]) -> BatchResult:
        stored = duplicates = 0
        for record in records:
            try:
                if isinstance(record, TelemetryWindowRecord):
                    result = self.store.add_telemetry_windows([record])
                else:
                    result = self.store.add_drift_windows([record])
            except InvalidInputError as exc:
                self._drop(
                    channel, RefusedError(_parse.REFUSED_BY_DATABASE, exc.message), record.device_id
                )
                continue
            stored += result.stored
            duplicates += result.duplicates
        return BatchResult(stored, duplicates)

    def _stored(
        self, channel: str, records: Sequence[W], result: BatchResult, now: datetime, elapsed: float
    ) -> None:
        self._count(channel, stored=result.stored, duplicates=result.duplicates)
        if self.metrics is not None:
            self.metrics.batch(channel, elapsed)
            newest = max(r.window_start.timestamp() + r.window_s for r in records)
            self.metrics.lag(channel, max(0.0, now.timestamp() - newest))

    def _count(self, channel: str, **counts: int) -> None:
        if self.metrics is not None:
            self.metrics.count(channel, **counts)

    def _drop(self, channel: str, refused: RefusedError, where: str) -> None:
        if self.metrics is not None:
            self.metrics.drop(channel, refused.reason)
        log.warning(
            "dropped %s message on %s: %s: %s",
            channel,
            where[:200],
            refused.reason,
            " ".join(refused.message.split())[:500],
        )

    # -- HTTP --------------------------------------------------------------------------------
    def telemetry_http(self, device_id: str, body: bytes) -> BatchResult:
        """``{"reports": [TelemetryReport, ...]}`` posted by ``device_id`` itself."""
        now = self.clock()
        try:
            obj = canonical.decode(body, max_bytes=MAX_HTTP_REPORTS * MAX_TELEMETRY_BYTES)
        except EdgefleetError as exc:
            self._count(TELEMETRY, received=1)
            raise self._refuse(TELEMETRY, _parse.MALFORMED, f"not canonical JSON: {exc}") from exc
        items = obj.get("reports") if isinstance(obj, dict) else None
        # Received counts reports, as over MQTT; a body without a list is one message.
        self._count(TELEMETRY, received=len(items) if isinstance(items, list) else 1)
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_HTTP_REPORTS:
            raise self._refuse(
                TELEMETRY,
                _parse.MALFORMED,
                f'send {{"reports": [...]}} with 1 to {MAX_HTTP_REPORTS} telemetry reports',
            )
        records = []
        for index, item in enumerate(items):
            try:
                report = TelemetryReport.from_dict(item)
                records.append(_parse.telemetry_record(report, device_id, now, self.bounds))
            except EdgefleetError as exc:
                raise self._refuse(TELEMETRY, _parse.MALFORMED, f"report {index}: {exc}") from exc
            except RefusedError as refused:
                raise self._refuse(
                    TELEMETRY, refused.reason, f"report {index}: {refused}"
                ) from None
        return self._write_http(TELEMETRY, records, now)

    def drift_http(self, device_id: str, body: bytes) -> BatchResult:
        """One encoded drift summary posted by ``device_id`` itself."""
        self._count(DRIFT, received=1)
        now = self.clock()
        try:
            record = _parse.parse_drift(body, device_id, now, self.bounds)
            self._check_reference(record)
        except RefusedError as refused:
            raise self._refuse(DRIFT, refused.reason, refused.message) from None
        return self._write_http(DRIFT, [record], now)

    def _write_http(self, channel: str, records: Sequence[W], now: datetime) -> BatchResult:
        started = time.perf_counter()
        if channel == TELEMETRY:
            result = self.store.add_telemetry_windows(records)  # type: ignore[arg-type]
        else:
            result = self.store.add_drift_windows(records)  # type: ignore[arg-type]
        self._stored(channel, records, result, now, time.perf_counter() - started)
        return result

    def _refuse(self, channel: str, reason: str, message: str) -> ControlPlaneError:
        if self.metrics is not None:
            self.metrics.drop(channel, reason)
        if reason == _parse.OVERSIZE:
            return PayloadTooLargeError(message)
        return InvalidInputError(message)


__all__ = ["CACHE_S", "MAX_HTTP_REPORTS", "TelemetryIngest"]
