"""Prometheus metrics of the control plane: ingestion counters and fleet gauges.

Theory of operation: each app builds one :class:`ControlPlaneMetrics` with its
own :class:`~prometheus_client.CollectorRegistry` (never the global one, so
several apps in one process, as in tests, do not collide). Ingestion updates
counters and histograms as it goes; everything read from the database (rollout
phases, target statuses) or from another object (queue depth, status-report
totals) is computed at scrape time by :class:`FleetCollector`, so a scrape
always shows the store's current state and nothing is polled in between.

Several workers: counters live in each worker process. When
``PROMETHEUS_MULTIPROC_DIR`` names a directory (set before the workers start;
emptied at each server start), prometheus-client's multiprocess mode keeps
them in memory-mapped files there and every scrape adds up all workers
(:class:`~prometheus_client.multiprocess.MultiProcessCollector`). Without it a
scrape shows the counters of the worker that answered.

``GET /metrics`` (:mod:`control_plane.api.routes.metrics`) needs a viewer
token unless ``metrics.public`` is set: rollout names and fleet sizes are
operational data, and Prometheus sends a bearer token easily
(``authorization: {credentials: ...}`` in the scrape config).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from control_plane.store import Store

log = logging.getLogger("edgefleet.metrics")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BATCH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class IngestMetrics:
    """Counters of what ingestion received, stored, found duplicated and dropped."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["channel"]
        self.received = Counter(
            "edgefleet_ingest_received",
            "Messages received by ingestion (MQTT and HTTP)",
            labels,
            registry=registry,
        ).labels
        self.stored = Counter(
            "edgefleet_ingest_stored", "Windows stored", labels, registry=registry
        ).labels
        self.duplicates = Counter(
            "edgefleet_ingest_duplicates",
            "Windows already stored (replays, redeliveries)",
            labels,
            registry=registry,
        ).labels
        self.dropped = Counter(
            "edgefleet_ingest_dropped",
            "Messages dropped, by reason (malformed, spoofed, unknown_device, ...)",
            [*labels, "reason"],
            registry=registry,
        ).labels
        self.batch_seconds = Histogram(
            "edgefleet_ingest_batch_seconds",
            "Time to write one batch of windows to the database",
            labels,
            buckets=_BATCH_BUCKETS_S,
            registry=registry,
        ).labels
        self.lag_seconds = Gauge(
            "edgefleet_ingest_lag_seconds",
            "Age at storing of the freshest window of the last batch (now - window end)",
            labels,
            registry=registry,
            multiprocess_mode="livemostrecent",
        ).labels

    def count(
        self, channel: str, *, received: int = 0, stored: int = 0, duplicates: int = 0
    ) -> None:
        if received:
            self.received(channel).inc(received)
        if stored:
            self.stored(channel).inc(stored)
        if duplicates:
            self.duplicates(channel).inc(duplicates)

    def drop(self, channel: str, reason: str, count: int = 1) -> None:
        self.dropped(channel, reason).inc(count)

    def batch(self, channel: str, seconds: float) -> None:
        self.batch_seconds(channel).observe(seconds)

    def lag(self, channel: str, seconds: float) -> None:
        self.lag_seconds(channel).set(seconds)


class FleetCollector(Collector):
    """Gauges computed at scrape time: rollouts, targets, queue depth, status reports."""

    def __init__(
        self,
        store: Store,
        *,
        active_phases: tuple[str, ...],
        queue_depth: Callable[[], int | None] = lambda: None,
        report_totals: Callable[[], dict[str, int]] = dict,
    ) -> None:
        self.store = store
        self.active_phases = active_phases
        self.queue_depth = queue_depth
        self.report_totals = report_totals

    def collect(self) -> Iterator[Metric]:
        pid = str(os.getpid())
        depth = self.queue_depth()
        if depth is not None:
            queue = GaugeMetricFamily(
                "edgefleet_ingest_queue_depth",
                "MQTT messages received and waiting to be stored",
                labels=["pid"],
            )
            queue.add_metric([pid], depth)
            yield queue
        reports = CounterMetricFamily(
            "edgefleet_status_reports",
            "MQTT messages seen by the report consumer (status, presence), by outcome",
            labels=["pid", "outcome"],
        )
        for outcome, count in sorted(self.report_totals().items()):
            reports.add_metric([pid, outcome], count)
        yield reports
        try:
            phases = self.store.count_rollouts_by_phase()
            targets = self.store.count_targets_by_status(self.active_phases)
        except Exception:  # a scrape must answer even when the database does not
            log.exception("reading rollout gauges failed")
            return
        rollouts = GaugeMetricFamily("edgefleet_rollouts", "Rollouts by phase", labels=["phase"])
        for phase, count in sorted(phases.items()):
            rollouts.add_metric([phase], count)
        yield rollouts
        by_status = GaugeMetricFamily(
            "edgefleet_rollout_targets",
            "Devices of active rollouts by target status",
            labels=["rollout", "status"],
        )
        for (rollout, status), count in sorted(targets.items()):
            by_status.add_metric([rollout, status], count)
        yield by_status


class ControlPlaneMetrics:
    """The registry an app exposes on ``/metrics`` and the ingestion counters in it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if os.environ.get(MULTIPROC_ENV):
            # The counters write to the shared files; the scrape reads all workers' files.
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
            self.ingest = IngestMetrics(CollectorRegistry())
        else:
            self.ingest = IngestMetrics(self.registry)

    def watch(self, collector: FleetCollector) -> None:
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["CONTENT_TYPE", "ControlPlaneMetrics", "FleetCollector", "IngestMetrics"]
