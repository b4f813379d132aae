"""Building the drift probe, telemetry and capture, and their one timer thread.

Theory of operation. :func:`build_observers` turns the ``[drift]`` and
``[telemetry]`` configuration into the running parts, all fed from the local
API's requests and the serving host's statistics:

* the :class:`~agent._channel_outbox.ChannelOutbox` with one bounded channel
  each for ``drift``, ``telemetry`` and ``capture``;
* the :class:`~agent.probe.DriftProbe` (``[drift] enabled``), which follows
  the served release: its drift reference is looked up in the verified
  manifests when the release starts serving (activation, so summaries flow
  during probation, when a rollout's quality gate needs them) and fetched
  with its own :class:`~agent.download.Downloader`;
* the :class:`~agent.capture.CaptureSampler` (``capture_enabled``);
* the :class:`~agent.feedback.RequestLog` handing out request ids;
* the :class:`~agent.telemetry.TelemetryReporter` (``[telemetry] enabled``);
* the :class:`~agent._windows.WindowTimer` that closes their windows and
  runs their ticks on one thread.

Nothing here runs on an inference thread except ``RequestLog.observe``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent._channel_outbox import ChannelLimit, ChannelOutbox
from agent._windows import WindowTimer
from agent.config import AgentConfig
from agent.download import DownloadConfig, Downloader
from agent.statedb import StateDB
from fleetcore.metadata import ReleaseManifest

if TYPE_CHECKING:
    import httpx

    from agent._driftref import ReferenceStore
    from agent.capture import CaptureSampler
    from agent.feedback import RequestLog
    from agent.probe import DriftProbe
    from agent.serving import ModelHost
    from agent.telemetry import TelemetryReporter

#: Telemetry reports are small (about 2 KiB at most).
TELEMETRY_REPORT_BYTES = 4096


@dataclass
class Observers:
    channels: ChannelOutbox
    timer: WindowTimer
    requests: RequestLog | None = None
    probe: DriftProbe | None = None
    capture: CaptureSampler | None = None
    telemetry: TelemetryReporter | None = None

    def start(self) -> None:
        self.timer.start()

    def stop(self) -> None:
        """Close the windows in progress and queue what they hold."""
        self.timer.stop()
        if self.capture is not None:
            self.capture.finalize(everything=True)


def channel_limits(config: AgentConfig) -> dict[str, ChannelLimit]:
    d, t = config.drift, config.telemetry
    return {
        "drift": ChannelLimit(d.max_queued, d.max_queued_bytes),
        "telemetry": ChannelLimit(t.max_queued, t.max_queued * TELEMETRY_REPORT_BYTES),
        # A compressed sample is at most about its raw size, plus the archive's headers.
        "capture": ChannelLimit(
            d.max_queued_captures, d.max_queued_captures * (d.capture_max_bytes + 4096)
        ),
    }


def build_observers(
    config: AgentConfig,
    *,
    device: str,
    db: StateDB,
    client: httpx.Client,
    model_host: ModelHost | None,
    manifests: Callable[[], list[ReleaseManifest]],
    halt: threading.Event,
) -> Observers:
    """The parts for ``config``; without a serving host only the (empty) queues exist."""
    observers = Observers(ChannelOutbox(db, channel_limits(config)), WindowTimer())
    if model_host is None:
        return observers
    from agent import capture, feedback, probe, telemetry  # noqa: PLC0415 - numpy-heavy

    drift, timer = config.drift, observers.timer
    if drift.enabled:
        store = _reference_store(config, db, client, manifests, halt)
        observers.probe = probe.DriftProbe(
            device=device,
            window_s=drift.window_s,
            outbox=observers.channels,
            resolve=probe.store_resolver(store),
        )
        if drift.capture_enabled:
            observers.capture = capture.CaptureSampler(
                outbox=observers.channels,
                window_s=drift.window_s,
                rate=drift.capture_rate,
                max_rows=drift.capture_max_rows,
                max_bytes=drift.capture_max_bytes,
                label_grace_s=drift.capture_label_grace_s,
            )
        observers.requests = feedback.RequestLog(
            observers.probe, observers.capture, capacity=drift.feedback_requests
        )
        drift_probe, window = observers.probe, drift.window_s
        timer.on_tick(lambda: drift_probe.sync(model_host.info, timer.window_start(window)))
        timer.on_tick(drift_probe.flush)
        timer.every(window, drift_probe.close)
        sampler = observers.capture
        if sampler is not None:
            timer.every(window, sampler.close)
            timer.on_tick(sampler.finalize)
    if config.telemetry.enabled:
        reporter = telemetry.TelemetryReporter(
            device=device,
            window_s=config.telemetry.window_s,
            outbox=observers.channels,
            source=telemetry.host_source(model_host),
            resources=telemetry.ProcessSampler(Path(config.data_dir)),
        )
        observers.telemetry = reporter
        timer.every(config.telemetry.window_s, reporter.close)
    return observers


def _reference_store(
    config: AgentConfig,
    db: StateDB,
    client: httpx.Client,
    manifests: Callable[[], list[ReleaseManifest]],
    halt: threading.Event,
) -> ReferenceStore:
    from agent._driftref import ReferenceStore  # noqa: PLC0415

    up = config.update
    downloader = Downloader(
        client,
        DownloadConfig(
            connect_timeout_s=up.download_connect_timeout_s,
            read_timeout_s=up.download_read_timeout_s,
            attempts=up.download_attempts,
            backoff_initial_s=up.download_backoff_initial_s,
            backoff_max_s=up.download_backoff_max_s,
        ),
        wait=halt.wait,
    )

    def fetch(sha256: str, length: int, part: Path) -> None:
        downloader.fetch(sha256, length, part, cancelled=halt.is_set)

    return ReferenceStore(
        config.data_dir,
        db,
        fetch=fetch,
        manifests=manifests,
        max_bytes=config.drift.max_reference_bytes,
    )


__all__ = ["Observers", "build_observers", "channel_limits"]
