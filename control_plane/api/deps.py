"""Request dependencies: the services container and the calling actor.

Routes declare what they need with ``Annotated`` aliases::

    def route(svc: ServicesDep, actor: Operator) -> ...

``Viewer``, ``Operator`` and ``Admin`` authenticate the bearer token and check
the role (viewer < operator < admin); a missing or bad token is 401, a role
too low is 403. ``Device`` authenticates a device token (``efd_…``); routes
call ``device.require(device_id)`` so a device only acts on its own id (403).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import anyio.to_thread
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from control_plane.auth import Actor
from control_plane.devices.auth import DeviceCaller
from control_plane.errors import ConfigurationError, PermissionDeniedError
from control_plane.services import DeviceServices, Services
from control_plane.store import Role

bearer = HTTPBearer(
    auto_error=False,
    description="An operator token (efo_…), or on device routes an enrollment (efe_…) "
    "or device token (efd_…)",
)


# These dependencies are async on purpose: FastAPI runs sync dependencies in a
# thread pool, one hop each, which dominated the cost of small requests. The
# token lookup (on a cache miss) runs in a thread.


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


async def get_actor(svc: ServicesDep, credentials: Credentials) -> Actor:
    token = None if credentials is None else credentials.credentials
    actor = svc.auth.cached(token)
    if actor is not None:
        return actor
    # A database round trip: off the event loop, so a slow or locked database
    # never stalls other requests (downloads in flight, health checks).
    return await anyio.to_thread.run_sync(svc.auth.authenticate, token)


def require(role: Role) -> Callable[[Actor], Awaitable[Actor]]:
    async def check(actor: Annotated[Actor, Depends(get_actor)]) -> Actor:
        if not actor.role.allows(role):
            raise PermissionDeniedError(
                f"token {actor.name!r} has role {actor.role.value}; this needs {role.value}"
            )
        return actor

    return check


Viewer = Annotated[Actor, Depends(require(Role.VIEWER))]
Operator = Annotated[Actor, Depends(require(Role.OPERATOR))]
Admin = Annotated[Actor, Depends(require(Role.ADMIN))]


async def get_fleet(svc: ServicesDep) -> DeviceServices:
    if svc.fleet is None:
        raise ConfigurationError("this server was built without its device services")
    return svc.fleet


FleetDep = Annotated[DeviceServices, Depends(get_fleet)]


async def get_device(fleet: FleetDep, credentials: Credentials) -> DeviceCaller:
    token = None if credentials is None else credentials.credentials
    caller = fleet.auth.cached(token)
    if caller is not None:
        return caller
    return await anyio.to_thread.run_sync(fleet.auth.authenticate, token)


Device = Annotated[DeviceCaller, Depends(get_device)]

__all__ = [
    "Admin",
    "Device",
    "FleetDep",
    "Operator",
    "ServicesDep",
    "Viewer",
    "get_actor",
    "get_device",
    "get_fleet",
    "get_services",
    "require",
]
