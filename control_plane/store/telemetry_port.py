"""The telemetry half of the storage port: raw windows, rollups, captures and fleet gauges.

Theory of operation: devices send one telemetry report and one drift summary
per window; ingestion writes them in batches (:meth:`add_telemetry_windows`,
:meth:`add_drift_windows`) that keep each ``(device, seq)`` once per channel,
whatever the transport delivered twice or two replicas stored at once. A
periodic pass (:meth:`roll_up_telemetry`, :meth:`roll_up_drift`) merges raw
windows older than the raw retention into hourly rollups and hourly rollups
older than the hourly retention into daily ones, deleting what it merged in
the same transaction: a crash leaves either both or neither, so nothing is
ever counted twice or lost. Queries (:meth:`drift_windows`,
:meth:`telemetry_by_release`) read raw windows and rollups in one statement,
hence from one snapshot, so a pass running meanwhile cannot make them see a
window twice.

Invariants:

* Batch writes never fail as a whole over a duplicate: duplicates are
  counted, not raised. A value a column refuses raises
  :class:`~control_plane.errors.InvalidInputError` and writes nothing of the
  batch, so the caller can retry row by row and drop the bad one.
* Windows are filtered by their start: ``since <= window_start < until``.
  A rollup is included when its own (hour or day) start is in range.
* Rollups of drift summaries never merge across reference digests or
  releases; the merge itself is the caller's (``merge``), so the store stays
  free of the summary format.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Protocol

from control_plane.store.telemetry_records import (
    BatchResult,
    CaptureRecord,
    DriftWindow,
    DriftWindowRecord,
    TelemetryAggregate,
    TelemetryWindowRecord,
)

#: Merges drift summaries of one device, model, release and reference into one
#: summary whose key has the given start and length; returns its encoding.
DriftMerge = Callable[[Sequence[DriftWindow], int, int], bytes]


class TelemetryStore(Protocol):
    # -- ingestion --------------------------------------------------------------------
    def add_telemetry_windows(self, records: Sequence[TelemetryWindowRecord]) -> BatchResult:
        """Store each ``(device_id, seq)`` once; the rest are duplicates."""
        ...

    def add_drift_windows(self, records: Sequence[DriftWindowRecord]) -> BatchResult:
        """Store each ``(device_id, seq)`` once; the rest are duplicates."""
        ...

    def active_device_ids(self, device_ids: Collection[str]) -> set[str]:
        """Those of ``device_ids`` that are enrolled and not decommissioned."""
        ...

    def drift_reference(self, model: str, release: int) -> str | None:
        """The drift reference digest signed for a release (``None``: it has none).

        NotFoundError when the release is not stored."""
        ...

    # -- captures -------------------------------------------------------------------
    def add_capture(self, record: CaptureRecord) -> tuple[CaptureRecord, bool]:
        """Store a capture once per (device, model, window_start); ``(stored, created)``.

        NotFoundError if the device or the artifact is not stored."""
        ...

    def list_captures(
        self,
        model: str,
        *,
        since: datetime | None = None,
        device_id: str | None = None,
        limit: int = 1000,
    ) -> list[CaptureRecord]:
        """Captures of ``model`` with ``window_start >= since``, oldest window first."""
        ...

    # -- queries --------------------------------------------------------------------
    def drift_windows(
        self,
        model: str,
        *,
        release: int | None = None,
        devices: Collection[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[DriftWindow]:
        """Drift summaries of ``model``, raw and rolled up, each window once.

        Ordered by window start, then device. Decode each ``payload`` with
        :func:`fleetcore.drift.encoding.decode` and merge per reference digest.
        """
        ...

    def telemetry_by_release(
        self,
        model: str,
        *,
        since: datetime,
        until: datetime | None = None,
        devices: Collection[str] | None = None,
    ) -> dict[int, TelemetryAggregate]:
        """Telemetry of ``model`` summed per release over windows starting in range."""
        ...

    # -- retention -------------------------------------------------------------------
    def roll_up_telemetry(
        self, *, before: datetime, into_s: int, now: datetime, limit: int = 5000
    ) -> int:
        """Merge up to ``limit`` windows finer than ``into_s`` that start before ``before``
        into rollups of ``into_s`` seconds, deleting them; returns how many moved."""
        ...

    def roll_up_drift(
        self,
        *,
        before: datetime,
        into_s: int,
        now: datetime,
        merge: DriftMerge,
        limit: int = 2000,
    ) -> int:
        """As :meth:`roll_up_telemetry`, for drift summaries merged by ``merge``."""
        ...

    # -- gauges --------------------------------------------------------------------------
    def count_rollouts_by_phase(self) -> dict[str, int]: ...

    def count_targets_by_status(self, phases: Collection[str]) -> dict[tuple[str, str], int]:
        """``(rollout name, target status) -> count`` for rollouts in ``phases``."""
        ...


__all__ = ["DriftMerge", "TelemetryStore"]
