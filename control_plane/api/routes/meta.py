"""Health, identity, the audit log and root metadata."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from control_plane.api.deps import Operator, ServicesDep, Viewer
from control_plane.api.errors import ERROR_RESPONSES
from control_plane.api.schemas import NAME, AuditPublic, Health, WhoAmI
from fleetcore import __version__

#: Root versions are small counters; a bound keeps absurd ones (hundreds of
#: digits, a file name too long for the OS) from reaching the key directory.
MAX_ROOT_VERSION = 2**31 - 1

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)


@router.get("/health", tags=["meta"], summary="Liveness; needs no token")
def health() -> Health:
    return Health(status="ok", version=__version__)


@router.get("/whoami", tags=["meta"], summary="The calling token's name and role")
def whoami(actor: Viewer) -> WhoAmI:
    return WhoAmI(name=actor.name, role=actor.role)


@router.get("/audit", tags=["audit"], summary="The audit log, newest first")
def audit_log(
    svc: ServicesDep,
    _: Operator,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    actor: Annotated[str | None, Query(pattern=NAME)] = None,
    object_type: Annotated[str | None, Query(pattern=r"^[a-z_]{1,64}$")] = None,
    object_id: Annotated[
        str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@#-]{0,255}$")
    ] = None,
) -> list[AuditPublic]:
    entries = svc.store.list_audit(
        limit=limit, actor=actor, object_type=object_type, object_id=object_id
    )
    return [AuditPublic.from_record(e) for e in entries]


@router.get(
    "/metadata/root",
    tags=["metadata"],
    summary="The newest signed root metadata (public)",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}},
)
def latest_root(svc: ServicesDep) -> Response:
    return Response(svc.releases.keys.root_bytes(), media_type="application/json")


@router.get(
    "/metadata/root/{version}",
    tags=["metadata"],
    summary="Root metadata version N, for devices walking the chain (public)",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}},
)
def root_version(
    version: Annotated[int, Path(ge=1, le=MAX_ROOT_VERSION)], svc: ServicesDep
) -> Response:
    return Response(svc.releases.keys.root_bytes(version), media_type="application/json")
