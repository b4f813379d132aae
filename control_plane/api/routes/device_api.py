"""Routes devices call: enroll, long-poll the desired state, post status reports.

Enrollment authenticates with an enrollment token (``efe_…``); everything
else with the device's own token (``efd_…``), and a device may only use its
own id. Bodies are read raw and parsed strictly by :mod:`fleetcore` (canonical
JSON: no duplicate keys, no NaN), the same parser the MQTT consumer uses.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Header, Query, Request, Response, status

from control_plane.api.deps import Credentials, Device, FleetDep
from control_plane.api.device_schemas import EnrollmentPublic, ReportsAccepted
from control_plane.api.errors import ERROR_RESPONSES
from control_plane.api.routes._device_post import JSON_BODY, DeviceId, device_post

router = APIRouter(prefix="/v1", tags=["device API"], responses=ERROR_RESPONSES)
#: Longest long-poll; below the idle timeouts of common load balancers.
MAX_WAIT_S = 120


@router.post(
    "/enroll",
    status_code=status.HTTP_201_CREATED,
    summary="Enroll a device (Bearer: an enrollment token)",
    description="The body is an envelope signed by the device's own key; see docs/protocol.md.",
    openapi_extra=JSON_BODY,
)
async def enroll(request: Request, fleet: FleetDep, credentials: Credentials) -> EnrollmentPublic:
    token = None if credentials is None else credentials.credentials
    enrolled = await anyio.to_thread.run_sync(fleet.enrollment.enroll, token, await request.body())
    return EnrollmentPublic.from_enrolled(enrolled)


@router.get(
    "/devices/{device_id}/desired",
    summary="The device's desired state; long-polls with wait_s and If-None-Match",
    response_class=Response,
    responses={
        200: {"content": {"application/json": {}}, "description": "The desired state"},
        204: {"description": "No assignment (yet)"},
        304: {"description": "Unchanged within wait_s"},
    },
)
async def desired(
    device_id: DeviceId,
    device: Device,
    fleet: FleetDep,
    wait_s: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description="seconds to wait")] = 0,
    if_none_match: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    device.require(device_id)
    answer = await fleet.desired.poll(device_id, if_none_match, wait_s)
    headers = {"Cache-Control": "no-store"}
    if answer.etag is not None:
        headers["ETag"] = answer.etag
    media = "application/json" if answer.status == 200 else None
    return Response(answer.body or None, answer.status, headers, media_type=media)


@router.post(
    "/devices/{device_id}/reports",
    summary="Post a batch of status reports (at most 500)",
    openapi_extra=JSON_BODY,
)
async def post_reports(
    device_id: DeviceId, request: Request, device: Device, fleet: FleetDep
) -> ReportsAccepted:
    result = await device_post(device, device_id, request, fleet.ingest.http)
    return ReportsAccepted(
        accepted=result.accepted, duplicates=result.duplicates, last_seq=result.last_seq
    )
