"""What every route a device posts a raw body to does first, in one place.

Theory of operation: device routes take the body raw (no pydantic model)
because it goes through the same strict parser as the MQTT message of the
same kind; so the OpenAPI request body is declared by hand
(:data:`JSON_BODY`, :data:`BINARY_BODY`). Invariant: the body is read only
after ``device.require(device_id)`` passed, so a device never gets another
device's body parsed (403 first), and the parse runs off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import anyio.to_thread
from fastapi import Path, Request

from control_plane.api.device_schemas import DEVICE
from control_plane.devices.auth import DeviceCaller

T = TypeVar("T")
#: The ``{device_id}`` path parameter.
DeviceId = Annotated[str, Path(pattern=DEVICE)]


def _request_body(media: str, schema: dict[str, str]) -> dict[str, object]:
    return {"requestBody": {"required": True, "content": {media: {"schema": schema}}}}


#: ``openapi_extra`` of a route that reads a JSON object raw.
JSON_BODY = _request_body("application/json", {"type": "object"})
#: ``openapi_extra`` of a route that reads raw bytes.
BINARY_BODY = _request_body("application/octet-stream", {"type": "string", "format": "binary"})


async def device_body(device: DeviceCaller, device_id: str, request: Request) -> bytes:
    """The raw body, once the calling device is known to act on its own id."""
    device.require(device_id)
    return await request.body()


async def device_post(
    device: DeviceCaller, device_id: str, request: Request, handle: Callable[[str, bytes], T]
) -> T:
    """``handle(device_id, body)`` in a worker thread, after :func:`device_body`."""
    body = await device_body(device, device_id, request)
    return await anyio.to_thread.run_sync(handle, device_id, body)


__all__ = ["BINARY_BODY", "JSON_BODY", "DeviceId", "device_body", "device_post"]
