"""Retention: raw windows into hourly rollups, hourly rollups into daily ones.

Theory of operation: :meth:`Retention.run` (called every
``telemetry.rollup_interval_s`` by each worker) asks the store to roll raw
telemetry and drift windows that started more than ``raw_retention_days`` ago
into hours, then hourly rollups older than ``hourly_retention_days`` into
days, one bounded pass after another until nothing is left. Each pass is one
transaction that writes the rollups and deletes what it merged (see
:mod:`control_plane.store._telemetry_rollup_sql`), so a crash or a second
replica never loses or doubles a window, and a pass that finds nothing is a
cheap no-op.

Drift summaries merge with :func:`merge_encoded`: decoded, merged exactly
(:func:`fleetcore.drift.summary.merge_all`) and encoded again under the
rollup's key (its start and length, the highest ``seq`` merged). A stored
payload that no longer decodes or whose shape differs from the rest (which
ingestion should have prevented) is left out with an error in the log rather
than blocking retention for ever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from control_plane.config import TelemetrySettings
from control_plane.store import DriftWindow, RollupResult, Store
from control_plane.store.telemetry_records import DAY_S, HOUR_S
from fleetcore.drift.encoding import decode, encode
from fleetcore.drift.summary import DriftSummary, WindowKey, merge_all
from fleetcore.errors import EdgefleetError

log = logging.getLogger("edgefleet.retention")
#: A rollup merges summaries of one shape; its encoding stays near one summary's size,
#: but it is read back with room to spare.
ROLLUP_MAX_BYTES = 1 << 20
#: Windows per pass (one transaction each).
PASS_LIMIT = 2000


def merge_encoded(windows: Sequence[DriftWindow], start: int, length: int) -> bytes:
    """The encoded merge of ``windows`` (one device, model, release and reference)."""
    summaries: list[DriftSummary] = []
    for window in windows:
        try:
            summaries.append(decode(window.payload, max_bytes=ROLLUP_MAX_BYTES))
        except EdgefleetError as exc:
            log.error("a stored drift summary of %s does not decode: %s", window.device_id, exc)
    if not summaries:
        raise ValueError(f"none of {len(windows)} stored drift summaries decodes")
    shape = max(
        {(s.body.n_features, s.body.n_classes) for s in summaries},
        key=lambda fk: sum(
            s.body.n for s in summaries if (s.body.n_features, s.body.n_classes) == fk
        ),
    )
    kept = [s for s in summaries if (s.body.n_features, s.body.n_classes) == shape]
    if len(kept) < len(summaries):
        log.error(
            "%d drift summaries of %s differ in shape from the rest; left out of the rollup",
            len(summaries) - len(kept),
            kept[0].key.device,
        )
    first = kept[0].key
    key = WindowKey(
        device=first.device,
        model=first.model,
        release=first.release,
        reference=first.reference,
        start=start,
        length=length,
        seq=max(s.key.seq for s in kept),
    )
    return encode(DriftSummary(key, merge_all(s.body for s in kept)))


class Retention:
    def __init__(
        self, store: Store, settings: TelemetrySettings, clock: Callable[[], datetime]
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock

    def run(self) -> RollupResult:
        """Roll up everything due now; returns how many windows moved where."""
        now = self.clock()
        raw_before = now - timedelta(days=self.settings.raw_retention_days)
        hourly_before = now - timedelta(days=self.settings.hourly_retention_days)
        result = RollupResult(
            telemetry_to_hourly=self._drain(
                lambda: self.store.roll_up_telemetry(
                    before=raw_before, into_s=HOUR_S, now=now, limit=PASS_LIMIT
                )
            ),
            drift_to_hourly=self._drain(
                lambda: self.store.roll_up_drift(
                    before=raw_before, into_s=HOUR_S, now=now, merge=merge_encoded, limit=PASS_LIMIT
                )
            ),
            telemetry_to_daily=self._drain(
                lambda: self.store.roll_up_telemetry(
                    before=hourly_before, into_s=DAY_S, now=now, limit=PASS_LIMIT
                )
            ),
            drift_to_daily=self._drain(
                lambda: self.store.roll_up_drift(
                    before=hourly_before,
                    into_s=DAY_S,
                    now=now,
                    merge=merge_encoded,
                    limit=PASS_LIMIT,
                )
            ),
        )
        if result.moved:
            log.info("retention: %s", result)
        return result

    @staticmethod
    def _drain(one_pass: Callable[[], int]) -> int:
        total = 0
        while True:
            moved = one_pass()
            total += moved
            if moved < PASS_LIMIT:
                return total


__all__ = ["PASS_LIMIT", "ROLLUP_MAX_BYTES", "Retention", "merge_encoded"]
