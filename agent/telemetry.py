"""Health telemetry: one report per served release and clock-aligned window.

Theory of operation. :class:`TelemetryReporter.close` runs at the end of
every window (from the window timer's thread). It reads the serving
statistics of the active model (:class:`agent.serving.ServingStats`) and
reports the *difference* since its previous read: the statistics themselves
are never reset, because probation judges the same counters since
activation. Each activation starts a new statistics object, so the reporter
remembers the objects it has read (with the release they belong to) and, in
the window of a switch, reports the old release's last counts in a report of
its own before the new one's: no report mixes two releases, and nothing
served is counted twice or lost. A quiet window still yields one report for
the active model (or for no model), which is the device's heartbeat.

Each report also carries the agent process's CPU use over the window (user
plus system time from ``/proc/self/stat`` over wall time, in percent of one
core), its resident set size (``/proc/self/statm``) and the free space of the
data directory (``statvfs``); on a system without ``/proc`` those are null.

Reports are queued on the ``telemetry`` channel of the
:class:`~agent._channel_outbox.ChannelOutbox`, whose transaction assigns the
channel's ``seq``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from agent._channel_outbox import ChannelOutbox
from agent.errors import AgentError
from agent.serving import ModelHost, ModelInfo, ServingStats, StatsSnapshot
from agent.serving_errors import NoModelError
from fleetcore.errors import EdgefleetError
from fleetcore.protocol import Channel
from fleetcore.telemetry import LATENCY_BUCKETS, TelemetryReport

log = logging.getLogger(__name__)
TELEMETRY = Channel.TELEMETRY.value


def host_source(host: ModelHost) -> Callable[[], tuple[ModelInfo | None, ServingStats]]:
    """Read a host's active model and its statistics at once (never one of each)."""

    def current() -> tuple[ModelInfo | None, ServingStats]:
        try:
            active = host.current()
        except NoModelError:
            return None, host.stats
        return active.info, active.stats

    return current


@dataclass
class _Tracked:
    info: ModelInfo | None
    stats: ServingStats
    last: tuple[int, int, int, tuple[int, ...]]  # inferences, errors, input_errors, histogram


_ZERO = (0, 0, 0, (0,) * LATENCY_BUCKETS)


def _figures(snap: StatsSnapshot) -> tuple[int, int, int, tuple[int, ...]]:
    return (snap.inferences, snap.errors, snap.input_errors, tuple(snap.histogram))


class ProcessSampler:
    """CPU percent (since the previous sample), RSS and disk free, from /proc and statvfs."""

    def __init__(self, data_dir: Path, proc: Path = Path("/proc/self")) -> None:
        self.data_dir, self.proc = data_dir, proc
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._last = (time.monotonic(), self._cpu_s())

    def _cpu_s(self) -> float | None:
        try:
            text = (self.proc / "stat").read_text()
        except OSError:
            return None
        # Fields after the command name, which is in parentheses and may hold spaces.
        fields = text[text.rfind(")") + 2 :].split()
        try:
            return (int(fields[11]) + int(fields[12])) / self._tick  # utime, stime
        except (IndexError, ValueError):
            return None

    def cpu_percent(self) -> float | None:
        now, cpu = time.monotonic(), self._cpu_s()
        then, before = self._last
        self._last = (now, cpu)
        if cpu is None or before is None or now <= then:
            return None
        return round(max(0.0, cpu - before) / (now - then) * 100.0, 2)

    def rss_bytes(self) -> int | None:
        try:
            return int((self.proc / "statm").read_text().split()[1]) * self._page
        except (OSError, IndexError, ValueError):
            return None

    def disk_free_bytes(self) -> int | None:
        try:
            st = os.statvfs(self.data_dir)
        except OSError:
            return None
        return int(st.f_bavail * st.f_frsize)


class TelemetryReporter:
    """Queues one :class:`TelemetryReport` per served release and window."""

    def __init__(
        self,
        *,
        device: str,
        window_s: int,
        outbox: ChannelOutbox,
        source: Callable[[], tuple[ModelInfo | None, ServingStats]],
        resources: ProcessSampler,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.device, self.window_s, self.outbox = device, window_s, outbox
        self._source, self.resources, self._clock = source, resources, clock
        self._tracked: list[_Tracked] = []

    def close(self, start: int) -> list[int]:
        """Queue the reports of the window starting at ``start``; their seqs."""
        info, stats = self._source()
        if not any(t.stats is stats for t in self._tracked):
            # A new generation's counters start at zero when it is activated.
            self._tracked.append(_Tracked(info, stats, _ZERO))
        cpu = self.resources.cpu_percent()
        rss, disk = self.resources.rss_bytes(), self.resources.disk_free_bytes()
        seqs: list[int] = []
        keep: list[_Tracked] = []
        for tracked in self._tracked:
            now = _figures(tracked.stats.snapshot())
            delta = _delta(tracked.last, now)
            tracked.last = now
            current = tracked.stats is stats
            if current:
                keep.append(tracked)
            if not current and not any(delta[:3]):
                continue
            report = TelemetryReport(
                device=self.device,
                seq=1,
                time=self._clock().replace(microsecond=0),
                window_start=start - start % self.window_s,
                window_s=self.window_s,
                model=None if tracked.info is None else tracked.info.model,
                release=None if tracked.info is None else tracked.info.release,
                inferences=delta[0],
                errors=delta[1],
                input_errors=delta[2],
                latency_buckets=delta[3],
                cpu_percent=cpu,
                rss_bytes=rss,
                disk_free_bytes=disk,
            )
            seq = self._queue(report)
            if seq is not None:
                seqs.append(seq)
        self._tracked = keep
        return seqs

    def _queue(self, report: TelemetryReport) -> int | None:
        try:
            return self.outbox.enqueue(
                TELEMETRY, lambda seq: dataclasses.replace(report, seq=seq).encode()
            )
        except (AgentError, ValueError, EdgefleetError) as exc:
            log.error("telemetry of window %d not queued: %s", report.window_start, exc)
            return None


def _delta(
    before: tuple[int, int, int, tuple[int, ...]], after: tuple[int, int, int, tuple[int, ...]]
) -> tuple[int, int, int, tuple[int, ...]]:
    if after[0] < before[0] or after[1] < before[1] or after[2] < before[2]:
        return after  # the statistics were reset: everything now is new
    return (
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2],
        tuple(a - b for a, b in zip(after[3], before[3], strict=True)),
    )


__all__ = ["TELEMETRY", "ProcessSampler", "TelemetryReporter", "host_source"]
