"""agent.telemetry: per-window deltas of the serving statistics, per release, and resources."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.serving import ModelInfo, ServingStats
from agent.telemetry import TELEMETRY, ProcessSampler, TelemetryReporter
from fleetcore.telemetry import LATENCY_BUCKETS, TelemetryReport
from tests.unit.agent.driftkit import channels, model_info

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


class Source:
    def __init__(self) -> None:
        self.info: ModelInfo | None = model_info(1)
        self.stats = ServingStats()

    def __call__(self) -> tuple[ModelInfo | None, ServingStats]:
        return self.info, self.stats

    def switch(self, info: ModelInfo | None) -> None:
        self.info, self.stats = info, ServingStats()


class FixedResources(ProcessSampler):
    def cpu_percent(self) -> float | None:
        return 12.5


def reports(reporter: TelemetryReporter) -> list[TelemetryReport]:
    items = reporter.outbox.peek(TELEMETRY)
    reporter.outbox.ack(i.id for i in items)
    return [TelemetryReport.decode(i.body) for i in items]


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Source, TelemetryReporter]:
    source = Source()
    reporter = TelemetryReporter(
        device="dev-1",
        window_s=60,
        outbox=channels(tmp_path),
        source=source,
        resources=FixedResources(tmp_path),
        clock=lambda: NOW,
    )
    return source, reporter


def test_each_window_reports_what_happened_in_it(setup: tuple[Source, TelemetryReporter]) -> None:
    source, reporter = setup
    for latency in (50_000, 60_000, 2_000_000):
        source.stats.record(latency)
    source.stats.record_error()
    source.stats.record_input_error()
    assert reporter.close(120) == [1]
    (first,) = reports(reporter)
    assert (first.device, first.seq, first.window_start, first.window_s) == ("dev-1", 1, 120, 60)
    assert (first.model, first.release) == ("tiny", 1)
    assert (first.inferences, first.errors, first.input_errors) == (3, 1, 1)
    assert sum(first.latency_buckets) == 3 and len(first.latency_buckets) == LATENCY_BUCKETS
    assert first.cpu_percent == 12.5
    assert first.disk_free_bytes is not None and first.disk_free_bytes > 0
    source.stats.record(70_000)
    reporter.close(180)
    (second,) = reports(reporter)
    assert (second.seq, second.inferences, second.errors, sum(second.latency_buckets)) == (
        2,
        1,
        0,
        1,
    )
    # The statistics themselves were never reset: probation still sees them all.
    assert source.stats.snapshot().inferences == 4


def test_a_quiet_window_is_still_reported(setup: tuple[Source, TelemetryReporter]) -> None:
    source, reporter = setup
    source.info = None
    reporter.close(0)
    (report,) = reports(reporter)
    assert (report.model, report.release, report.inferences) == (None, None, 0)


def test_a_switch_reports_the_old_release_apart(setup: tuple[Source, TelemetryReporter]) -> None:
    source, reporter = setup
    reporter.close(0)
    reports(reporter)
    source.stats.record(10_000)
    source.stats.record(10_000)
    old = source.stats
    source.switch(model_info(2))
    old.record(10_000)  # a request that started on the old model finishes after the switch
    source.stats.record(20_000)
    reporter.close(60)
    got = {r.release: r.inferences for r in reports(reporter)}
    assert got == {1: 3, 2: 1}
    reporter.close(120)
    assert [(r.release, r.inferences) for r in reports(reporter)] == [(2, 0)]


def test_reports_are_canonical_json_on_the_wire(setup: tuple[Source, TelemetryReporter]) -> None:
    source, reporter = setup
    source.stats.record(5_000)
    reporter.close(60)
    body = json.loads(reporter.outbox.peek(TELEMETRY)[0].body)
    assert body["_type"] == "telemetry" and body["seq"] == 1
    assert sum(body["latency_buckets"].values()) == 1  # sparse: only the non-zero bucket
    assert len(body["latency_buckets"]) == 1


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_process_figures_come_from_proc(tmp_path: Path) -> None:
    sampler = ProcessSampler(tmp_path)
    sum(i * i for i in range(200_000))  # burn a little CPU
    cpu = sampler.cpu_percent()
    assert cpu is not None and cpu >= 0.0
    rss = sampler.rss_bytes()
    assert rss is not None and rss > 10 * 1024 * 1024  # a Python with numpy
    st = os.statvfs(tmp_path)
    free = sampler.disk_free_bytes()
    assert free is not None and abs(free - st.f_bavail * st.f_frsize) < 64 * 1024 * 1024


def test_without_proc_the_figures_are_null(tmp_path: Path) -> None:
    sampler = ProcessSampler(tmp_path / "missing", proc=tmp_path / "no-proc")
    assert sampler.cpu_percent() is None
    assert sampler.rss_bytes() is None
    assert sampler.disk_free_bytes() is None
