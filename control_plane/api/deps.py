"""Request dependencies: the services container and the calling actor.

Routes declare what they need with ``Annotated`` aliases::

    def route(svc: ServicesDep, actor: Operator) -> ...

``Viewer``, ``Operator`` and ``Admin`` authenticate the bearer token and check
the role (viewer < operator < admin); a missing or bad token is 401, a role
too low is 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import anyio.to_thread
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from control_plane.auth import Actor
from control_plane.errors import PermissionDeniedError
from control_plane.services import Services
from control_plane.store import Role

bearer = HTTPBearer(auto_error=False, description="An operator token from 'fleetctl token create'")


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

__all__ = ["Admin", "Operator", "ServicesDep", "Viewer", "get_actor", "get_services", "require"]
