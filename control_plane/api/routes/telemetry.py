"""Routes of telemetry, drift summaries, data captures and ``GET /metrics``.

Devices post with their own token (``efd_…``) and only for their own id;
bodies are read raw and go through the same ingest code as MQTT messages
(:mod:`control_plane.telemetry.ingest`). Operators list captures;
``/metrics`` answers Prometheus, with a viewer token unless ``metrics.public``.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import BaseModel, Field

from control_plane.api.deps import Credentials, Device, Operator, ServicesDep, get_actor
from control_plane.api.errors import ERROR_RESPONSES
from control_plane.api.routes._device_post import (
    BINARY_BODY,
    JSON_BODY,
    DeviceId,
    device_body,
    device_post,
)
from control_plane.api.schemas import MAX_COUNTER, NAME
from control_plane.errors import ConfigurationError
from control_plane.store import BatchResult, CaptureRecord
from control_plane.telemetry import TelemetryServices
from control_plane.telemetry.metrics import CONTENT_TYPE

router = APIRouter(tags=["telemetry"], responses=ERROR_RESPONSES)
Model = Annotated[str, Path(pattern=NAME)]


async def get_telemetry(svc: ServicesDep) -> TelemetryServices:
    if svc.telemetry is None:
        raise ConfigurationError("this server was built without its telemetry services")
    return svc.telemetry


TelemetryDep = Annotated[TelemetryServices, Depends(get_telemetry)]


class WindowsAccepted(BaseModel):
    accepted: int = Field(description="windows stored now")
    duplicates: int = Field(description="windows already stored (same device and seq)")

    @classmethod
    def of(cls, result: BatchResult) -> WindowsAccepted:
        return cls(accepted=result.stored, duplicates=result.duplicates)


class CapturePublic(BaseModel):
    id: int
    device_id: str
    model: str
    release: int
    window_start: datetime
    rows: int
    labelled: int
    artifact_sha256: str = Field(description="download with GET /v1/artifacts/{sha256}")
    received_at: datetime

    @classmethod
    def from_record(cls, r: CaptureRecord) -> CapturePublic:
        return cls(**{name: getattr(r, name) for name in cls.model_fields})


@router.post(
    "/v1/devices/{device_id}/telemetry",
    summary="Post a batch of telemetry reports (at most 500)",
    openapi_extra=JSON_BODY,
)
async def post_telemetry(
    device_id: DeviceId, request: Request, device: Device, telemetry: TelemetryDep
) -> WindowsAccepted:
    return WindowsAccepted.of(
        await device_post(device, device_id, request, telemetry.ingest.telemetry_http)
    )


@router.post(
    "/v1/devices/{device_id}/drift",
    summary="Post one encoded drift summary (application/octet-stream, at most 64 KiB)",
    openapi_extra=BINARY_BODY,
)
async def post_drift(
    device_id: DeviceId, request: Request, device: Device, telemetry: TelemetryDep
) -> WindowsAccepted:
    return WindowsAccepted.of(
        await device_post(device, device_id, request, telemetry.ingest.drift_http)
    )


@router.post(
    "/v1/devices/{device_id}/captures",
    summary="Upload a data capture (.npz with x, y and time) of one window",
    openapi_extra=BINARY_BODY,
    responses={200: {"description": "This window's capture was already stored"}},
    status_code=status.HTTP_201_CREATED,
)
async def post_capture(
    device_id: DeviceId,
    request: Request,
    response: Response,
    device: Device,
    telemetry: TelemetryDep,
    model: Annotated[str, Query(pattern=NAME)],
    release: Annotated[int, Query(ge=1, le=MAX_COUNTER)],
    window_start: Annotated[int, Query(ge=0, description="unix seconds")],
) -> CapturePublic:
    body = await device_body(device, device_id, request)
    upload = partial(telemetry.captures.upload, device_id, model, release, window_start, body)
    record, created = await anyio.to_thread.run_sync(upload)
    if not created:
        response.status_code = status.HTTP_200_OK
    return CapturePublic.from_record(record)


@router.get("/v1/models/{model}/captures", summary="Data captures of a model, oldest first")
async def list_captures(
    model: Model,
    _: Operator,
    telemetry: TelemetryDep,
    since: Annotated[datetime | None, Query(description="window start, ISO 8601")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[CapturePublic]:
    listed = partial(telemetry.captures.list, model, since=since, limit=limit)
    return [CapturePublic.from_record(r) for r in await anyio.to_thread.run_sync(listed)]


@router.get(
    "/metrics",
    summary="Prometheus metrics (a viewer token unless metrics.public)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}}},
)
async def metrics(svc: ServicesDep, telemetry: TelemetryDep, credentials: Credentials) -> Response:
    if not svc.settings.metrics.public:
        await get_actor(svc, credentials)  # any valid token: viewer is the lowest role
    body = await anyio.to_thread.run_sync(telemetry.metrics.render)
    return Response(body, media_type=CONTENT_TYPE)
