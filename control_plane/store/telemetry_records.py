"""Records of device telemetry, drift summaries and data captures, as the store keeps them.

Raw windows are kept as devices sent them (one row per ``(device, seq)``);
rollups are the same quantities merged per device, model, release (and, for
drift, reference digest) over an hour or a day. Queries hand back
:class:`DriftWindow` and :class:`TelemetryAggregate`, which look the same
whether they came from raw windows or from rollups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from fleetcore.telemetry import LATENCY_BUCKETS, latency_quantile_ns

#: Rollup resolutions, seconds.
HOUR_S = 3600
DAY_S = 86_400


@dataclass(frozen=True)
class TelemetryWindowRecord:
    """One :class:`fleetcore.telemetry.TelemetryReport` as stored."""

    device_id: str
    seq: int
    time: datetime
    window_start: datetime
    window_s: int
    model: str | None
    release: int | None
    inferences: int
    errors: int
    input_errors: int
    latency: str  # canonical JSON of the sparse buckets {"<index>": count}
    cpu_percent: float | None
    rss_bytes: int | None
    disk_free_bytes: int | None
    received_at: datetime


@dataclass(frozen=True)
class DriftWindowRecord:
    """One encoded drift summary (:mod:`fleetcore.drift.encoding`) as received."""

    device_id: str
    seq: int
    model: str
    release: int
    reference: str  # sha256 hex of the release's drift reference
    window_start: datetime
    window_s: int
    samples: int
    payload: bytes
    received_at: datetime


@dataclass(frozen=True)
class CaptureRecord:
    """A sample of one device's inputs over one window, stored as a dataset artifact."""

    device_id: str
    model: str
    release: int
    window_start: datetime
    rows: int
    labelled: int
    artifact_sha256: str
    received_at: datetime
    id: int = 0


@dataclass(frozen=True)
class BatchResult:
    """What a batch write did: ``stored`` new rows, ``duplicates`` already there."""

    stored: int
    duplicates: int


@dataclass(frozen=True)
class DriftWindow:
    """A drift summary to merge: a raw window, or an hourly or daily rollup of them.

    ``payload`` decodes with :func:`fleetcore.drift.encoding.decode`; a
    rollup's key has the rollup's start and length and the highest ``seq`` it
    merged. ``windows`` counts the raw windows inside (1 for a raw one).
    """

    device_id: str
    model: str
    release: int
    reference: str
    window_start: datetime
    window_s: int
    samples: int
    windows: int
    payload: bytes


@dataclass(frozen=True)
class TelemetryAggregate:
    """Telemetry of one release summed over devices and windows."""

    model: str
    release: int
    devices: int
    windows: int
    inferences: int
    errors: int
    input_errors: int
    latency_buckets: tuple[int, ...] = field(default=(0,) * LATENCY_BUCKETS)

    @property
    def error_rate(self) -> float:
        """Failed over attempted inferences (0.0 when there were none)."""
        attempted = self.inferences + self.errors
        return self.errors / attempted if attempted else 0.0

    def latency_quantile_ms(self, q: float) -> float:
        return latency_quantile_ns(self.latency_buckets, q) / 1e6


@dataclass(frozen=True)
class RollupResult:
    """What one retention pass moved: raw windows into hours, hours into days."""

    telemetry_to_hourly: int = 0
    drift_to_hourly: int = 0
    telemetry_to_daily: int = 0
    drift_to_daily: int = 0

    @property
    def moved(self) -> int:
        return (
            self.telemetry_to_hourly
            + self.drift_to_hourly
            + self.telemetry_to_daily
            + self.drift_to_daily
        )


__all__ = [
    "DAY_S",
    "HOUR_S",
    "BatchResult",
    "CaptureRecord",
    "DriftWindow",
    "DriftWindowRecord",
    "RollupResult",
    "TelemetryAggregate",
    "TelemetryWindowRecord",
]
