"""Operator routes for devices: list, show, relabel, assign, decommission."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from control_plane.api.deps import FleetDep, Operator, Viewer
from control_plane.api.device_schemas import (
    DEVICE,
    AssignmentCreate,
    AssignmentPublic,
    DeviceDetail,
    DevicePublic,
    LabelsPatch,
)
from control_plane.api.errors import ERROR_RESPONSES
from control_plane.errors import InvalidInputError
from fleetcore.protocol import UpdateState

router = APIRouter(prefix="/v1/devices", tags=["devices"], responses=ERROR_RESPONSES)
DeviceId = Annotated[str, Path(pattern=DEVICE)]


def _selector(items: list[str]) -> dict[str, str]:
    selector = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"label selector {item[:100]!r} must look like key=value")
        selector[key] = value
    return selector


@router.get("", summary="List devices, optionally by labels and state")
def list_devices(
    fleet: FleetDep,
    _: Viewer,
    label: Annotated[list[str], Query(max_length=32, description="key=value; all must match")] = [],  # noqa: B006 - FastAPI copies query defaults
    state: UpdateState | None = None,
    include_decommissioned: bool = False,
    after: Annotated[str | None, Query(pattern=DEVICE, description="page after this id")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> list[DevicePublic]:
    devices = fleet.devices.list_devices(
        labels=_selector(label),
        state=state,
        include_decommissioned=include_decommissioned,
        after=after,
        limit=limit,
    )
    return [DevicePublic.from_record(d) for d in devices]


@router.get("/{device_id}", summary="A device with its newest reports and assignment")
def show_device(
    device_id: DeviceId,
    fleet: FleetDep,
    _: Viewer,
    reports: Annotated[int, Query(ge=1, le=500)] = 20,
) -> DeviceDetail:
    return DeviceDetail.from_view(fleet.devices.show(device_id, reports=reports))


@router.patch("/{device_id}/labels", summary="Set and remove labels")
def relabel(
    device_id: DeviceId, body: LabelsPatch, fleet: FleetDep, actor: Operator
) -> DevicePublic:
    updated = fleet.devices.relabel(device_id, body.set, body.remove, actor.name)
    return DevicePublic.from_record(updated)


@router.post(
    "/{device_id}/assignment",
    status_code=status.HTTP_201_CREATED,
    summary="Assign a released release to the device (signs a new assignment)",
)
def assign(
    device_id: DeviceId, body: AssignmentCreate, fleet: FleetDep, actor: Operator
) -> AssignmentPublic:
    signed = fleet.director.assign(
        device_id, body.model, actor.name, version=body.version, release=body.release
    )
    return AssignmentPublic.from_record(signed)


@router.delete("/{device_id}", summary="Decommission: revoke the device's token and MQTT access")
def decommission(device_id: DeviceId, fleet: FleetDep, actor: Operator) -> DevicePublic:
    return DevicePublic.from_record(fleet.devices.decommission(device_id, actor.name))
