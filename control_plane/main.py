"""Building the control-plane application.

``create_app(settings)`` wires the services and routes and returns a FastAPI
app; nothing happens at import time. ``fleetctl serve`` runs
``create_app_from_env`` under uvicorn after applying database migrations.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from fastapi import FastAPI

from control_plane.api import errors
from control_plane.api.limits import BodyLimitMiddleware
from control_plane.api.routes import artifacts, meta, models, releases, tokens
from control_plane.artifacts.filesystem import FilesystemArtifactStore
from control_plane.auth import AuthService
from control_plane.config import Settings, load_settings
from control_plane.db.engine import make_engine
from control_plane.registry.service import RegistryService
from control_plane.releases.service import ReleaseService
from control_plane.services import Services, utc_now
from control_plane.store.sql import SqlStore
from fleetcore import __version__

DESCRIPTION = """\
The edgefleet control plane: a registry of quantized model versions with a
validation gate, signed releases, content-addressed artifact serving, operator
tokens with roles, and an audit log of every change.

Authenticate with `Authorization: Bearer <token>` (create the first admin token
on the server host with `fleetctl token create NAME --role admin --local`).
Errors have one shape: `{"error": {"code": "...", "message": "..."}}`.
"""


def build_services(settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> Services:
    store = SqlStore(make_engine(settings.db_url))
    artifacts_store = FilesystemArtifactStore(settings.artifacts_path)
    registry = RegistryService(store, artifacts_store, settings, clock)
    return Services(
        settings=settings,
        store=store,
        artifacts=artifacts_store,
        auth=AuthService(store, clock, cache_ttl=timedelta(seconds=settings.token_cache_s)),
        registry=registry,
        releases=ReleaseService(store, registry, settings, clock),
        clock=clock,
    )


def create_app(settings: Settings, *, services: Services | None = None) -> FastAPI:
    svc = services or build_services(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Everything allocated so far lives as long as the process: move it out
        # of the collector's way, so full collections scan only new objects and
        # do not stall the event loop (tail latency).
        gc.collect()
        gc.freeze()
        yield
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
    for module in (meta, artifacts, models, releases, tokens):
        app.include_router(module.router)
    return app


def create_app_from_env() -> FastAPI:
    """uvicorn factory: settings from ``EDGEFLEET_*`` and ``EDGEFLEET_CONFIG``."""
    return create_app(load_settings())


__all__ = ["build_services", "create_app", "create_app_from_env"]
