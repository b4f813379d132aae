"""The telemetry services, wired: ingestion, captures, retention and metrics.

:func:`build_telemetry` makes them from settings; the app's lifespan runs
:meth:`TelemetryServices.retention` every ``telemetry.rollup_interval_s``
seconds, and the MQTT bridge hands telemetry and drift messages to
:attr:`TelemetryServices.ingest` through the status-report ingest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import anyio.to_thread

from control_plane.artifacts.port import ArtifactStore
from control_plane.config import Settings
from control_plane.rollouts.control import ACTIVE_PHASES, REVERTING
from control_plane.store import Store
from control_plane.telemetry.captures import CaptureService
from control_plane.telemetry.ingest import TelemetryIngest
from control_plane.telemetry.metrics import ControlPlaneMetrics, FleetCollector
from control_plane.telemetry.rollup import Retention

if TYPE_CHECKING:
    from control_plane.services import DeviceServices

log = logging.getLogger("edgefleet.telemetry")


@dataclass
class TelemetryServices:
    ingest: TelemetryIngest
    captures: CaptureService
    retention: Retention
    metrics: ControlPlaneMetrics


def build_telemetry(
    settings: Settings,
    store: Store,
    artifacts: ArtifactStore,
    clock: Callable[[], datetime],
) -> TelemetryServices:
    metrics = ControlPlaneMetrics()
    return TelemetryServices(
        ingest=TelemetryIngest(store, clock, settings.telemetry, metrics.ingest),
        captures=CaptureService(store, artifacts, settings.telemetry, clock),
        retention=Retention(store, settings.telemetry, clock),
        metrics=metrics,
    )


def connect_telemetry(telemetry: TelemetryServices, fleet: DeviceServices | None) -> None:
    """Route MQTT telemetry and drift to ingestion; expose the fleet's gauges on /metrics."""
    store = telemetry.ingest.store
    if fleet is None:
        telemetry.metrics.watch(FleetCollector(store, active_phases=(*ACTIVE_PHASES, REVERTING)))
        return
    fleet.ingest.telemetry = telemetry.ingest
    bridge = fleet.bridge
    telemetry.metrics.watch(
        FleetCollector(
            store,
            active_phases=(*ACTIVE_PHASES, REVERTING),
            queue_depth=(lambda: None) if bridge is None else (lambda: bridge.queue_depth),
            report_totals=fleet.ingest.stats.snapshot,
        )
    )


async def retain_forever(retention: Retention, every_s: float) -> None:
    """Run the retention pass every ``every_s`` seconds, forever (a lifespan task)."""
    while True:
        try:
            await anyio.to_thread.run_sync(retention.run)
        except Exception:  # a database hiccup: try again next round
            log.exception("telemetry retention failed")
        await asyncio.sleep(every_s)


def start_retention(
    telemetry: TelemetryServices | None, every_s: float
) -> asyncio.Task[None] | None:
    """The retention task of a worker's lifespan (none without telemetry or with ``every_s`` 0)."""
    if telemetry is None or every_s <= 0:
        return None
    return asyncio.create_task(retain_forever(telemetry.retention, every_s), name="retention")


async def stop_retention(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


__all__ = [
    "TelemetryServices",
    "build_telemetry",
    "connect_telemetry",
    "retain_forever",
    "start_retention",
    "stop_retention",
]
