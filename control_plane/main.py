"""Building the control-plane application.

``create_app(settings)`` wires the services and routes and returns a FastAPI
app; nothing happens at import time. ``fleetctl serve`` runs
``create_app_from_env`` under uvicorn after applying database migrations.

Without ``mqtt.url`` (and with ``mqtt.embedded``, the default)
``create_app_from_env`` also prepares an embedded amqtt broker
(:mod:`control_plane.mqtt.embedded`): the lifespan starts it before the
bridge and stops it after. The lifespan of each worker brings the broker's
password file up to date, starts the MQTT bridge when ``mqtt.url`` is set
(or the embedded broker runs), and runs two background
tasks: one renews assignments due for renewal (and re-syncs the password
file) every ``assignment_renew_check_s`` seconds, the other drives the
rollouts this process holds the lease of every ``rollout_tick_s`` seconds.
A third rolls old telemetry and drift windows up into hours and days every
``telemetry.rollup_interval_s`` seconds; a fourth hands fleet drift to the
retraining policies every ``drift.check_interval_s`` seconds
(:mod:`control_plane.drift.monitor`). The rollout driver's health and quality
gates read agent telemetry and drift summaries.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import anyio.to_thread
from fastapi import FastAPI

from control_plane.api import errors
from control_plane.api.limits import BodyLimitMiddleware
from control_plane.api.routes import (
    artifacts,
    device_api,
    devices,
    meta,
    models,
    releases,
    retraining,
    rollouts,
    telemetry,
    tokens,
)
from control_plane.api.routes import (
    drift as drift_routes,
)
from control_plane.artifacts.filesystem import FilesystemArtifactStore
from control_plane.auth import AuthService
from control_plane.config import Settings, load_settings
from control_plane.db.engine import make_engine
from control_plane.devices.auth import DeviceAuth
from control_plane.devices.broker import BrokerAccounts
from control_plane.devices.desired import DesiredService, DesiredWatch
from control_plane.devices.director import Director
from control_plane.devices.enroll import EnrollmentService
from control_plane.devices.ingest import ReportIngest
from control_plane.devices.service import DeviceService
from control_plane.drift import build_drift
from control_plane.drift.health import TelemetryHealthSource
from control_plane.drift.monitor import DriftMonitor
from control_plane.drift.quality import DriftQualitySource
from control_plane.mqtt.bridge import MqttBridge
from control_plane.mqtt.embedded import EmbeddedBroker, prepare_embedded
from control_plane.registry.service import RegistryService
from control_plane.releases.service import ReleaseService
from control_plane.retraining import build_retraining
from control_plane.rollouts.control import RolloutControl
from control_plane.rollouts.driver import DriverSettings, RolloutDriver
from control_plane.rollouts.revert import FleetRevert
from control_plane.rollouts.service import RolloutService
from control_plane.services import DeviceServices, Services, utc_now
from control_plane.store import Store
from control_plane.store.sql import SqlStore
from control_plane.telemetry.service import (
    build_telemetry,
    connect_telemetry,
    start_retention,
    stop_retention,
)
from fleetcore import __version__

log = logging.getLogger("edgefleet")

DESCRIPTION = """\
The edgefleet control plane: a registry of quantized model versions with a
validation gate, signed releases, content-addressed artifact serving, device
enrollment, signed per-device assignments (over MQTT and HTTP long-poll),
status reports, staged rollouts with gates and automatic revert, operator
tokens with roles, and an audit log of every change.

Authenticate with `Authorization: Bearer <token>` (create the first admin token
on the server host with `fleetctl token create NAME --role admin --local`).
Devices use their enrollment token (`efe_…`) to enroll and their device token
(`efd_…`) afterwards.
Errors have one shape: `{"error": {"code": "...", "message": "..."}}`.
"""


def build_devices(
    settings: Settings, store: Store, release_service: ReleaseService, clock: Callable[[], datetime]
) -> DeviceServices:
    """The device services, wired: assignments wake long-polls and go out over MQTT."""
    cache = timedelta(seconds=settings.token_cache_s)
    device_auth = DeviceAuth(store, clock, cache)
    broker = BrokerAccounts(settings.mqtt, store.mqtt_accounts)
    director = Director(store, release_service, settings, clock)
    watch = DesiredWatch(store.desired_sequences, settings.desired_check_s)
    ingest = ReportIngest(store, clock)
    device_service = DeviceService(store, device_auth, broker, clock)
    director.listeners.append(watch.notify)
    revert = FleetRevert(store, director, release_service, clock)
    control = RolloutControl(store, revert, clock)
    driver = RolloutDriver(
        store, director, control, clock, DriverSettings(lease_s=settings.rollout_lease_s)
    )
    bridge = None
    if settings.mqtt.url is not None:
        bridge = MqttBridge(
            settings.mqtt, settings.data_dir / "mqtt", store, director, ingest, clock
        )
        director.listeners.append(bridge.publish_latest)
        device_service.on_decommission.append(bridge.clear)
    return DeviceServices(
        auth=device_auth,
        devices=device_service,
        enrollment=EnrollmentService(store, release_service.keys, broker, settings, clock),
        director=director,
        desired=DesiredService(director, watch),
        ingest=ingest,
        broker=broker,
        rollouts=RolloutService(store, director, release_service, control, clock),
        driver=driver,
        revert=revert,
        bridge=bridge,
    )


def build_services(settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> Services:
    store = SqlStore(make_engine(settings.db_url))
    artifacts_store = FilesystemArtifactStore(settings.artifacts_path)
    registry = RegistryService(store, artifacts_store, settings, clock)
    release_service = ReleaseService(store, registry, settings, clock)
    fleet = build_devices(settings, store, release_service, clock)
    telemetry_services = build_telemetry(settings, store, artifacts_store, clock)
    connect_telemetry(telemetry_services, fleet)
    drift = build_drift(settings.drift, store, artifacts_store, clock)
    fleet.driver.health = TelemetryHealthSource(store, clock)
    fleet.driver.quality = DriftQualitySource(
        drift,
        clock,
        min_samples=settings.drift.quality_min_samples,
        lookback=timedelta(seconds=settings.drift.lookback_s),
    )
    return Services(
        settings=settings,
        store=store,
        artifacts=artifacts_store,
        auth=AuthService(store, clock, cache_ttl=timedelta(seconds=settings.token_cache_s)),
        registry=registry,
        releases=release_service,
        clock=clock,
        fleet=fleet,
        telemetry=telemetry_services,
        retraining=build_retraining(settings.retraining, store, clock),
        drift=drift,
    )


async def _watch_drift(svc: Services, every_s: float) -> None:
    """Hand drift alarms to the retraining policies, every ``drift.check_interval_s``."""
    if svc.drift is None or svc.retraining is None or every_s <= 0:
        return
    monitor = DriftMonitor(svc.drift, svc.retraining, svc.clock)
    while True:
        try:
            await anyio.to_thread.run_sync(monitor.check)
        except Exception:  # the next interval tries again
            log.exception("checking fleet drift failed")
        await asyncio.sleep(every_s)


async def _maintain(fleet: DeviceServices, every_s: float) -> None:
    """Renew assignments due for renewal and heal the broker's password file, forever."""
    while True:
        try:
            renewed = await anyio.to_thread.run_sync(fleet.director.renew_due)
            if renewed:
                log.info("renewed %d assignment(s)", len(renewed))
            await anyio.to_thread.run_sync(fleet.broker.sync_quietly)
        except Exception:  # a database hiccup: try again next round
            log.exception("assignment renewal failed")
        await asyncio.sleep(every_s)


async def _drive_rollouts(fleet: DeviceServices, every_s: float) -> None:
    """Drive the rollouts this process holds, forever."""
    while True:
        try:
            await anyio.to_thread.run_sync(fleet.driver.tick)
        except Exception:  # a database hiccup: try again next round
            log.exception("driving rollouts failed")
        await asyncio.sleep(every_s)


def create_app(
    settings: Settings,
    *,
    services: Services | None = None,
    embedded: EmbeddedBroker | None = None,
) -> FastAPI:
    """The app; ``embedded`` is a broker from :func:`prepare_embedded` to run in the lifespan."""
    svc = services or build_services(settings)
    if embedded is not None and svc.fleet is not None:
        svc.fleet.devices.on_decommission.append(embedded.disconnect)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Everything allocated so far lives as long as the process: move it out
        # of the collector's way, so full collections scan only new objects and
        # do not stall the event loop (tail latency).
        gc.collect()
        gc.freeze()
        fleet = svc.fleet
        maintenance = driving = None
        if embedded is not None:  # before the bridge, which connects to it
            await anyio.to_thread.run_sync(embedded.start, svc.store)
        if fleet is not None:
            # The control plane's own broker account must exist before it connects.
            await anyio.to_thread.run_sync(fleet.broker.sync_quietly)
            if fleet.bridge is not None:
                fleet.bridge.start()
            interval = settings.assignment_renew_check_s
            maintenance = asyncio.create_task(_maintain(fleet, interval), name="maintenance")
            driving = asyncio.create_task(
                _drive_rollouts(fleet, settings.rollout_tick_s), name="rollouts"
            )
        if svc.retraining is not None:
            svc.retraining.start()
        retention = start_retention(svc.telemetry, settings.telemetry.rollup_interval_s)
        watching = asyncio.create_task(
            _watch_drift(svc, settings.drift.check_interval_s), name="drift"
        )
        yield
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        await stop_retention(retention)
        if svc.retraining is not None:
            await anyio.to_thread.run_sync(svc.retraining.stop)
        for task in (maintenance, driving):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if fleet is not None:
            try:
                await anyio.to_thread.run_sync(fleet.driver.release_all)
            except Exception:  # leases expire on their own
                log.exception("giving up rollout leases failed")
        if fleet is not None and fleet.bridge is not None:
            await anyio.to_thread.run_sync(fleet.bridge.stop)
        if embedded is not None:
            await anyio.to_thread.run_sync(embedded.stop)
        dispose = getattr(svc.store, "dispose", None)
        if callable(dispose):
            dispose()

    app = FastAPI(
        title="edgefleet control plane",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.services = svc
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    errors.install(app)
    for module in (
        meta,
        artifacts,
        models,
        releases,
        tokens,
        devices,
        device_api,
        rollouts,
        retraining,
        telemetry,
        drift_routes,
    ):
        app.include_router(module.router)
    return app


def create_app_from_env() -> FastAPI:
    """uvicorn factory: settings from ``EDGEFLEET_*`` and ``EDGEFLEET_CONFIG``."""
    settings, embedded = prepare_embedded(load_settings())
    return create_app(settings, embedded=embedded)


__all__ = ["build_devices", "build_services", "create_app", "create_app_from_env"]
