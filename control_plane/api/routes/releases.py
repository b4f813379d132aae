"""Release routes: create (sign online or leave pending), sign offline, revoke, read."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Path, Query, Request, Response, status

from control_plane.api.deps import Operator, ServicesDep, Viewer
from control_plane.api.errors import ERROR_RESPONSES
from control_plane.api.rollout_schemas import RevertPublic, RevokedPublic
from control_plane.api.schemas import (
    MAX_COUNTER,
    NAME,
    ReleaseCreate,
    ReleasePublic,
    RevokeIn,
    SignaturesIn,
)
from control_plane.services import Services
from control_plane.store import ReleaseRecord
from fleetcore.envelope import Envelope, Signature

router = APIRouter(prefix="/v1/releases", tags=["releases"], responses=ERROR_RESPONSES)
Model = Annotated[str, Path(pattern=NAME)]
Counter = Annotated[int, Path(ge=1, le=MAX_COUNTER)]


def _public(svc: Services, record: ReleaseRecord) -> ReleasePublic:
    envelope = Envelope.from_bytes(record.manifest)
    root = svc.releases.keys.root()
    role = root.role("release")
    count = len(envelope.valid_keyids(role.keyids, root.keys))
    return ReleasePublic.from_record(record, envelope.signed, count)


@router.post("", status_code=status.HTTP_201_CREATED, summary="Release a validated version")
def create_release(body: ReleaseCreate, svc: ServicesDep, actor: Operator) -> ReleasePublic:
    record = svc.releases.create(
        body.model,
        body.version,
        actor.name,
        offline=body.offline,
        expires_in_days=body.expires_in_days,
        floor=body.floor,
    )
    return _public(svc, record)


@router.get("", summary="List releases")
def list_releases(
    svc: ServicesDep, _: Viewer, model: Annotated[str | None, Query(pattern=NAME)] = None
) -> list[ReleasePublic]:
    return [_public(svc, r) for r in svc.releases.list_releases(model)]


@router.get("/{model}/{counter}", summary="Show a release and its provenance")
def get_release(model: Model, counter: Counter, svc: ServicesDep, _: Viewer) -> ReleasePublic:
    return _public(svc, svc.releases.get(model, counter))


@router.get(
    "/{model}/{counter}/manifest",
    summary="The release manifest, signed (or unsigned while pending)",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}},
)
async def get_manifest(
    model: Model, counter: Counter, request: Request, svc: ServicesDep, _: Viewer
) -> Response:
    # Async and cached: devices poll this, and a released manifest never changes.
    # A cache miss reads the database in a thread, off the event loop.
    found = svc.releases.cached_manifest(model, counter)
    if found is None:
        found = await anyio.to_thread.run_sync(svc.releases.manifest, model, counter)
    body, etag = found
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    return Response(body, media_type="application/json", headers={"ETag": etag})


@router.post("/{model}/{counter}/signatures", summary="Attach offline release-key signatures")
def attach_signatures(
    model: Model, counter: Counter, body: SignaturesIn, svc: ServicesDep, actor: Operator
) -> ReleasePublic:
    signatures = [Signature(s.keyid, s.sig) for s in body.signatures]
    return _public(svc, svc.releases.attach_signatures(model, counter, signatures, actor.name))


@router.post(
    "/{model}/{counter}/revoke",
    summary="Revoke a release; devices assigned it go back to their previous release",
)
def revoke(
    model: Model, counter: Counter, body: RevokeIn, svc: ServicesDep, actor: Operator
) -> RevokedPublic:
    if svc.fleet is None:
        revoked, summary = svc.releases.revoke(model, counter, body.reason, actor.name), None
    else:
        revoked, summary = svc.fleet.rollouts.revoke(model, counter, body.reason, actor.name)
    public = _public(svc, revoked)
    return RevokedPublic(
        **public.model_dump(), devices=None if summary is None else RevertPublic.of(summary)
    )
