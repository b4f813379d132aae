"""The services container: one object holding everything a request may use.

Built by :func:`control_plane.main.create_app` from settings (or handed in by
tests), stored on ``app.state.services``, and given to routes through
``api.deps.ServicesDep``. Nothing here is created at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from control_plane.artifacts.port import ArtifactStore
from control_plane.auth import AuthService
from control_plane.config import Settings
from control_plane.store import Store

if TYPE_CHECKING:
    from control_plane.devices.auth import DeviceAuth
    from control_plane.devices.broker import BrokerAccounts
    from control_plane.devices.desired import DesiredService
    from control_plane.devices.director import Director
    from control_plane.devices.enroll import EnrollmentService
    from control_plane.devices.ingest import ReportIngest
    from control_plane.devices.service import DeviceService
    from control_plane.drift.service import DriftService
    from control_plane.mqtt.bridge import MqttBridge
    from control_plane.registry.service import RegistryService
    from control_plane.releases.service import ReleaseService
    from control_plane.retraining.service import RetrainingService
    from control_plane.rollouts.driver import RolloutDriver
    from control_plane.rollouts.revert import FleetRevert
    from control_plane.rollouts.service import RolloutService
    from control_plane.telemetry import TelemetryServices


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class DeviceServices:
    """Everything about enrolled devices: identity, assignments, reports, the broker."""

    auth: DeviceAuth
    devices: DeviceService
    enrollment: EnrollmentService
    director: Director
    desired: DesiredService
    ingest: ReportIngest
    broker: BrokerAccounts
    rollouts: RolloutService
    driver: RolloutDriver
    revert: FleetRevert
    bridge: MqttBridge | None = None


@dataclass
class Services:
    settings: Settings
    store: Store
    artifacts: ArtifactStore
    auth: AuthService
    registry: RegistryService
    releases: ReleaseService
    clock: Callable[[], datetime] = utc_now
    #: ``None`` only in tests that mount a few routes without devices.
    fleet: DeviceServices | None = None
    #: Telemetry, drift summaries, captures and /metrics; ``None`` in tests that do not need them.
    telemetry: TelemetryServices | None = None
    #: Drift policies and retraining triggers; ``None`` in tests that do not need them.
    retraining: RetrainingService | None = None
    #: Fleet drift reports; ``None`` in tests that do not need them.
    drift: DriftService | None = None


__all__ = ["DeviceServices", "Services", "utc_now"]
