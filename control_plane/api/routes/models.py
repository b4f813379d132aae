"""Model registry routes: register versions (running the validation gate), read them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from control_plane.api.deps import Operator, ServicesDep, Viewer
from control_plane.api.errors import ERROR_RESPONSES
from control_plane.api.schemas import NAME, ModelSummary, ModelVersionPublic, VersionCreate
from control_plane.registry.service import VersionRequest
from control_plane.services import Services
from control_plane.store import ModelVersionRecord, ReleaseState

router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERROR_RESPONSES)
Name = Annotated[str, Path(pattern=NAME)]
Version = Annotated[str, Path(pattern=NAME)]


def _public(svc: Services, record: ModelVersionRecord) -> ModelVersionPublic:
    parent = None
    if record.parent_id is not None:
        found = svc.store.get_version_by_id(record.parent_id)
        parent = None if found is None else found.version
    return ModelVersionPublic.from_record(record, parent)


@router.get("", summary="List models")
def list_models(svc: ServicesDep, _: Viewer) -> list[ModelSummary]:
    summaries = []
    releases = svc.store.list_releases()
    for name in svc.store.list_models():
        versions = svc.store.list_versions(name)
        summaries.append(
            ModelSummary(
                name=name,
                versions=len(versions),
                latest_version=versions[-1].version,
                released=[
                    r.counter
                    for r in releases
                    if r.model == name and r.state is ReleaseState.RELEASED
                ],
            )
        )
    return summaries


@router.post(
    "/{name}/versions",
    status_code=status.HTTP_201_CREATED,
    summary="Register a version and run the validation gate",
    description="The version is 'validated' when it passes every threshold, otherwise it stays "
    "'draft' with its reasons. Unusable input (not a model, data of the wrong shape) is refused "
    "with 422 and nothing stored.",
)
def create_version(
    name: Name, body: VersionCreate, svc: ServicesDep, actor: Operator
) -> ModelVersionPublic:
    request = VersionRequest(model=name, **body.model_dump())
    return _public(svc, svc.registry.create_version(request, actor.name))


@router.get("/{name}/versions", summary="List a model's versions")
def list_versions(name: Name, svc: ServicesDep, _: Viewer) -> list[ModelVersionPublic]:
    return [_public(svc, r) for r in svc.registry.list_versions(name)]


@router.get("/{name}/versions/{version}", summary="Show one version")
def get_version(name: Name, version: Version, svc: ServicesDep, _: Viewer) -> ModelVersionPublic:
    return _public(svc, svc.registry.get(name, version))


@router.post("/{name}/versions/{version}/validate", summary="Run the validation gate again")
def revalidate(
    name: Name, version: Version, svc: ServicesDep, actor: Operator
) -> ModelVersionPublic:
    return _public(svc, svc.registry.revalidate(name, version, actor.name))


__all__ = ["router"]
