"""Ingesting status reports and presence, from HTTP and from MQTT, by one code path.

Theory of operation: every report is parsed strictly by :mod:`fleetcore.protocol`
and stored through :meth:`Store.add_reports`, which keeps each
``(device, seq)`` once and moves a device's state only forward. Over HTTP a
device posts a batch for itself; a malformed batch is refused (422) as a
whole, so the device learns of it. Over MQTT the bridge hands over batches of
raw messages; each malformed one (bad JSON, unknown fields' types, a report
naming another device than its topic) is counted against the topic's device,
logged with its topic and the reason, never its payload, and dropped, while
the rest of the batch is stored in one transaction. Telemetry and drift
messages of the same batch are handed to :attr:`ReportIngest.telemetry`
(:class:`~control_plane.telemetry.ingest.TelemetryIngest`), which stores them
the same way after the reports.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from control_plane.errors import InvalidInputError, NotFoundError, StateError
from control_plane.store import DeviceReportRecord, ReportsResult, Store
from fleetcore import canonical
from fleetcore.errors import EdgefleetError, ProtocolError
from fleetcore.protocol import MAX_REPORT_BYTES, Channel, Presence, StatusReport, parse_topic

if TYPE_CHECKING:
    from control_plane.telemetry.ingest import TelemetryIngest

log = logging.getLogger("edgefleet.ingest")
#: Reports per HTTP batch.
MAX_HTTP_REPORTS = 500
_WINDOWS = (Channel.TELEMETRY, Channel.DRIFT)


@dataclass(frozen=True)
class RawMessage:
    topic: str
    payload: bytes
    #: Delivered from the broker's store on subscribing, not sent just now: a
    #: retained presence says whether the device is online, not that it was seen.
    retained: bool = False


@dataclass
class IngestStats:
    """Running totals of what the MQTT consumer saw (per process)."""

    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    presence: int = 0
    malformed: int = 0
    unknown_device: int = 0
    ignored: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {k: v for k, v in vars(self).items() if not k.startswith("_")}


def to_record(report: StatusReport, transport: str, now: datetime) -> DeviceReportRecord:
    return DeviceReportRecord(
        device_id=report.device,
        seq=report.seq,
        state=report.state,
        time=report.time,
        received_at=now,
        transport=transport,
        report=report.to_dict(),
    )


class ReportIngest:
    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock
        self.stats = IngestStats()
        #: Where telemetry and drift messages go; without it they are ignored.
        self.telemetry: TelemetryIngest | None = None

    def http(self, device_id: str, body: bytes) -> ReportsResult:
        """``{"reports": [StatusReport, ...]}`` posted by ``device_id`` itself."""
        try:
            obj = canonical.decode(body, max_bytes=MAX_HTTP_REPORTS * MAX_REPORT_BYTES)
        except EdgefleetError as exc:
            raise InvalidInputError(f"the body is not canonical JSON: {exc}") from exc
        items = obj.get("reports") if isinstance(obj, dict) else None
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_HTTP_REPORTS:
            raise InvalidInputError(
                f'send {{"reports": [...]}} with 1 to {MAX_HTTP_REPORTS} status reports'
            )
        reports = []
        for index, item in enumerate(items):
            try:
                report = StatusReport.from_dict(item)
            except ProtocolError as exc:
                raise InvalidInputError(f"report {index}: {exc}") from exc
            if report.device != device_id:
                raise InvalidInputError(f"report {index} is from {report.device}, not {device_id}")
            reports.append(report)
        now = self.clock()
        return self.store.add_reports(device_id, [to_record(r, "http", now) for r in reports], now)

    def mqtt(self, batch: Sequence[RawMessage]) -> None:
        """Store a batch of messages from the broker; malformed ones are counted and dropped.

        Raises only when the database fails, so the caller can retry the batch.
        """
        now = self.clock()
        reports: dict[str, list[DeviceReportRecord]] = {}
        presence: dict[str, tuple[bool, bool]] = {}  # device: (online, retained)
        malformed: Counter[str] = Counter()
        windows: list[tuple[str, str, Channel, bytes]] = []
        ignored = 0
        for message in batch:
            try:
                device, channel = parse_topic(message.topic)
            except ProtocolError as exc:
                self._drop(message.topic, exc)
                continue
            if channel is Channel.PRESENCE and not message.payload:
                ignored += 1  # a cleared retained message, not a report
                continue
            try:
                if channel is Channel.STATUS:
                    report = StatusReport.decode(message.payload)
                    self._same_device(report.device, device)
                    reports.setdefault(device, []).append(to_record(report, "mqtt", now))
                elif channel is Channel.PRESENCE:
                    seen = Presence.decode(message.payload)
                    self._same_device(seen.device, device)
                    presence[device] = (seen.online, message.retained)
                elif self.telemetry is not None and channel in _WINDOWS:
                    windows.append((message.topic, device, channel, message.payload))
                else:
                    ignored += 1
            except ProtocolError as exc:
                malformed[device] += 1
                self._drop(message.topic, exc)
        if reports or presence or malformed:
            self._store(reports, presence, malformed, now)
        if windows and self.telemetry is not None:
            self.telemetry.mqtt(windows)
        self.stats.add(received=len(batch), ignored=ignored)

    @staticmethod
    def _same_device(named: str, topic_device: str) -> None:
        if named != topic_device:
            raise ProtocolError(f"the message names device {named}, its topic {topic_device}")

    def _drop(self, topic: str, exc: EdgefleetError) -> None:
        self.stats.add(malformed=1)
        log.warning("dropped MQTT message on %s: %s", topic[:200], " ".join(str(exc).split()))

    def _store(
        self,
        reports: dict[str, list[DeviceReportRecord]],
        presence: dict[str, tuple[bool, bool]],
        malformed: Counter[str],
        now: datetime,
    ) -> None:
        accepted = duplicates = unknown = 0
        # Everything about one device is written together, devices in id order: two
        # consumers storing batches at once (replicas, workers) then lock device rows
        # in the same order and never deadlock on each other.
        with self.store.transaction() as tx:
            for device in sorted(set(reports) | set(presence) | set(malformed)):
                records = reports.get(device, [])
                try:
                    if records:
                        result = tx.add_reports(device, records, now)
                        accepted += result.accepted
                        duplicates += result.duplicates
                except (NotFoundError, StateError) as exc:
                    unknown += len(records)
                    log.info("reports on a topic of an unknown device dropped: %s", exc.message)
                except InvalidInputError as exc:
                    # One device's bad values roll back its own savepoint only;
                    # the batch, and every other device's reports, go on.
                    malformed[device] += len(records)
                    self.stats.add(malformed=len(records))
                    log.warning("dropped %d reports of %s: %s", len(records), device, exc.message)
                if device in presence:
                    online, retained = presence[device]
                    try:
                        tx.set_presence(device, online, None if retained else now)
                    except (NotFoundError, StateError):
                        unknown += 1
                if malformed[device]:
                    try:
                        tx.count_malformed_reports(device, malformed[device])
                    except NotFoundError:
                        unknown += malformed[device]
        self.stats.add(
            accepted=accepted, duplicates=duplicates, presence=len(presence), unknown_device=unknown
        )


__all__ = ["MAX_HTTP_REPORTS", "IngestStats", "RawMessage", "ReportIngest", "to_record"]
