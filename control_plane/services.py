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
    from control_plane.registry.service import RegistryService
    from control_plane.releases.service import ReleaseService


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Services:
    settings: Settings
    store: Store
    artifacts: ArtifactStore
    auth: AuthService
    registry: RegistryService
    releases: ReleaseService
    clock: Callable[[], datetime] = utc_now


__all__ = ["Services", "utc_now"]
