"""``fleet-agent run``: wire the parts together and keep them running.

Theory of operation. :func:`run` refuses to start without an identity or a
self-consistent pinned root (fail closed: exit 78, which the systemd unit
does not restart), takes the data directory's lock, and builds:

* the state database (:mod:`agent.statedb`), outbox and updater journal;
* the serving host (:class:`agent.serving.ModelHost` through
  :class:`agent.host.ServingHost`) and the local inference API
  (:class:`agent.localapi.LocalApi`), both imported lazily;
* the :class:`~agent.updater.Updater` on one worker thread: it resumes the
  journal (and loads the active model into the host) before anything else,
  then handles desired states one at a time;
* the transport chosen by ``transport`` (auto, mqtt, http) and the
  :class:`~agent.link.Link` threads that feed the updater and drain the
  outbox and the drift, telemetry and capture queues;
* the drift probe, telemetry reporter, input capture and request log, and the
  window timer that closes their windows (:mod:`agent._observers`).

Then it tells systemd ``READY=1`` and pings the watchdog at half its interval
while the worker thread is alive (a dead worker stops the pings, so systemd
restarts the agent). SIGTERM and SIGINT stop it cleanly: the worker records a
clean stop (the next start is not counted as a crash), the windows in
progress are closed and queued, queued reports get a moment to leave,
presence goes offline, the local API and the host stop.
SIGXFSZ is ignored so a file-size limit surfaces as EFBIG, which the updater
handles like a full disk.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

from agent._observers import build_observers
from agent.api import ControlPlane
from agent.config import AgentConfig
from agent.download import DownloadConfig, Downloader
from agent.errors import AgentError, ConfigError
from agent.host import Host, RuntimeHost, ServingHost
from agent.identity import Identity, load_identity
from agent.link import Link
from agent.lock import DataDirLock
from agent.outbox import Outbox
from agent.statedb import StateDB
from agent.transport import AutoTransport, Transport
from agent.transport.http import HttpTransport
from agent.transport.mqtt import MqttTransport
from agent.trustgate import TrustGate, check_pinned_root
from agent.updater import Updater
from fleetcore.errors import EdgefleetError
from fleetcore.metadata import ReleaseManifest

log = logging.getLogger("agent")
#: sysexits EX_CONFIG: not enrolled or misconfigured; systemd does not restart.
EXIT_CONFIG = 78


class _Service(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


def _systemd_notify(message: str) -> None:
    try:
        from agent import _systemd  # noqa: PLC0415 - optional outside systemd packaging
    except ImportError:
        return
    _systemd.notify(message)


def _watchdog_interval_s() -> float | None:
    try:
        from agent import _systemd  # noqa: PLC0415
    except ImportError:
        return None
    return _systemd.watchdog_interval_s()


def build_transport(config: AgentConfig, identity: Identity, api: ControlPlane) -> Transport:
    http = HttpTransport(api, wait_s=config.http.wait_s)
    mqtt_url = config.mqtt.url or (identity.mqtt.url if identity.mqtt else "")
    if config.transport == "http" or identity.mqtt is None or not mqtt_url:
        if config.transport == "mqtt":
            raise ConfigError("transport is mqtt but enrollment gave this device no MQTT broker")
        return http
    mqtt = MqttTransport(
        device_id=identity.device_id,
        url=mqtt_url,
        username=identity.mqtt.username,
        password=identity.mqtt.password,
        keepalive_s=config.mqtt.keepalive_s,
        connect_timeout_s=config.mqtt.connect_timeout_s,
        reconnect_max_s=config.mqtt.reconnect_max_s,
        tls_ca_path=None if config.tls_ca_path is None else str(config.tls_ca_path),
        reconcile=lambda: api.desired(wait_s=0).body,
    )
    if config.transport == "mqtt":
        return mqtt
    return AutoTransport(mqtt, http, fallback_after_s=config.mqtt.fallback_after_s)


def _host(config: AgentConfig) -> tuple[Host, Any]:
    """The serving host, and the ModelHost the local API serves (None without one)."""
    try:
        serving = ServingHost.create(threads=config.serving.threads)
    except ImportError as exc:
        log.warning("agent.serving unavailable (%s): models are loaded but not served", exc)
        return RuntimeHost(config.serving.threads), None
    return serving, serving.model_host


def _local_api(
    config: AgentConfig, model_host: Any, status: Callable[[], dict[str, Any]], requests: Any
) -> Any:
    if model_host is None or not config.local_api.listen:
        return None
    try:
        from agent.localapi import LocalApi  # noqa: PLC0415 - optional component
    except ImportError as exc:
        log.warning("local API unavailable: %s", exc)
        return None
    return LocalApi(model_host, config.local_api.listen, status, requests=requests)


class Agent:
    """The running daemon's parts."""

    def __init__(self, config: AgentConfig, identity: Identity) -> None:
        self.config, self.identity = config, identity
        data_dir = config.data_dir
        self.db = StateDB.open(data_dir)
        self.outbox = Outbox(self.db, max_reports=config.outbox.max_reports)
        self.api = ControlPlane(
            config.server or identity.server,
            identity.device_id,
            identity.device_token,
            tls_ca_path=config.tls_ca_path,
            timeout_s=config.http.timeout_s,
        )
        self.gate = TrustGate(data_dir, identity.device_id, self.api.root)
        self.host, model_host = _host(config)
        up = config.update
        downloads = DownloadConfig(
            connect_timeout_s=up.download_connect_timeout_s,
            read_timeout_s=up.download_read_timeout_s,
            attempts=up.download_attempts,
            backoff_initial_s=up.download_backoff_initial_s,
            backoff_max_s=up.download_backoff_max_s,
        )
        self.updater = Updater(
            data_dir=data_dir,
            device_id=identity.device_id,
            config=up,
            db=self.db,
            outbox=self.outbox,
            gate=self.gate,
            host=self.host,
            downloader=Downloader(self.api.client, downloads, wait=self._wait),
            threads=config.serving.threads,
        )
        self.transport = build_transport(config, identity, self.api)
        self.halt = threading.Event()  # ends reference downloads at shutdown
        self.observers = build_observers(
            config,
            device=identity.device_id,
            db=self.db,
            client=self.api.client,
            model_host=model_host,
            manifests=self._manifests,
            halt=self.halt,
        )
        uploads = HttpTransport(self.api, wait_s=config.http.wait_s)
        self.link = Link(
            self.transport,
            self.outbox,
            self.updater.offer,
            db=self.db,
            receive_timeout_s=float(config.http.wait_s),
            retry_max_s=config.http.retry_max_s,
            resend_s=config.outbox.resend_s,
            channels=self.observers.channels,
            upload_capture=uploads.upload_capture,
        )
        self.local_api: _Service | None = _local_api(
            config, model_host, self.local_status, self.observers.requests
        )
        self.stopping = threading.Event()
        self.worker = threading.Thread(target=self.updater.run, name="updater", daemon=True)

    def _wait(self, seconds: float) -> bool:
        return self.updater.mailbox.sleep(seconds)

    def _manifests(self) -> list[ReleaseManifest]:
        """Verified manifests the drift probe may take a drift reference from."""
        update = self.updater.journal.update
        return [] if update is None else [update.parsed_manifest()]

    def local_status(self) -> dict[str, Any]:
        journal = self.updater.journal
        return {
            "device_id": self.identity.device_id,
            "update_state": journal.state.value,
            "transport": self.transport.current,
        }

    def start(self) -> None:
        self.worker.start()
        self.link.start()
        self.observers.start()
        if self.local_api is not None:
            try:
                self.local_api.start()
            except OSError as exc:
                log.error("local API cannot listen on %s: %s", self.config.local_api.listen, exc)
                self.local_api = None
        _systemd_notify("READY=1")
        log.info("agent %s running (transport %s)", self.identity.device_id, self.config.transport)

    def wait(self) -> None:
        interval = _watchdog_interval_s()
        tick = 1.0 if interval is None else max(0.5, interval / 2)
        while not self.stopping.wait(tick):
            if not self.worker.is_alive():
                # Without the update worker the agent would serve forever and never
                # update: exit non-zero so systemd (or a container runtime) restarts it.
                raise AgentError("the update worker stopped unexpectedly", check="worker")
            if interval is not None:
                state = self.updater.journal.state.value
                _systemd_notify(f"WATCHDOG=1\nSTATUS=update {state}, link {self.transport.current}")

    def shutdown(self) -> None:
        _systemd_notify("STOPPING=1")
        log.info("stopping")
        self.updater.stop()
        self.worker.join(timeout=30)
        self.halt.set()
        self.observers.stop()
        self.link.stop()
        if self.local_api is not None:
            self.local_api.stop()
        self.host.deactivate()
        self.api.close()
        self.db.close()


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="edgefleet-agent: %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run(config: AgentConfig) -> int:
    """Run the agent until SIGTERM/SIGINT; the exit status."""
    _configure_logging(config.log_level)
    try:
        identity = load_identity(config.data_dir)
        check_pinned_root(config.data_dir)
    except (AgentError, EdgefleetError) as exc:
        log.error("refusing to run: %s", exc)
        return EXIT_CONFIG
    try:
        with DataDirLock(config.data_dir, purpose="start the agent"):
            agent = Agent(config, identity)

            def _on_signal(signum: int, _frame: FrameType | None) -> None:
                log.info("received %s", signal.Signals(signum).name)
                agent.stopping.set()

            signal.signal(signal.SIGTERM, _on_signal)
            signal.signal(signal.SIGINT, _on_signal)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            agent.start()
            try:
                agent.wait()
            finally:
                agent.shutdown()
    except ConfigError as exc:
        log.error("refusing to run: %s", exc)
        return EXIT_CONFIG
    except AgentError as exc:
        log.error("%s", exc.one_line())
        return 1
    return 0


__all__ = ["EXIT_CONFIG", "Agent", "build_transport", "run"]
