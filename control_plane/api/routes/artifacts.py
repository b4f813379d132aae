"""Artifact routes: upload raw bytes, download them by SHA-256 with Range resume.

Theory of operation. An upload streams the request body into the artifact
store, which hashes as it writes, so the digest is known only at the end and
no client-supplied digest is trusted. The size cap holds twice: a declared
``Content-Length`` over the cap is refused before a byte is read, and a
chunked body is cut off by the store the moment it passes the cap. The
database record and its audit entry are written in one transaction after the
bytes are durable; a crash in between leaves an unreferenced blob, never a
record without bytes.

Downloads (with a viewer token or a device token) are served from the
store's file with :class:`ArtifactResponse` (Starlette's ``FileResponse``:
the body is read in chunks, never loaded whole). Bytes under a digest never
change, so the ETag is the digest and the response may be cached forever.
Range handling follows RFC 9110 §14: the header is parsed here, a
syntactically invalid one or another unit is ignored (full 200),
unsatisfiable ranges are dropped, and only when none is left the answer is
416 with ``Content-Range: bytes */<size>``. A position of more than 19 digits
counts as invalid, so the whole header is ignored.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from datetime import datetime
from functools import partial
from typing import Annotated, Literal

import anyio.to_thread
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from control_plane.api.deps import Credentials, ServicesDep, get_actor, get_device, require
from control_plane.api.errors import ERROR_RESPONSES, error_response
from control_plane.artifacts.port import StoredBlob
from control_plane.audit import audit
from control_plane.auth import Actor
from control_plane.devices.auth import DeviceCaller, is_device_token
from control_plane.errors import (
    ConfigurationError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
)
from control_plane.services import Services
from control_plane.store import ArtifactRecord, Role

ArtifactKind = Literal["onnx", "tflite", "npz", "json"]
SHA256_PATTERN = r"^[0-9a-f]{64}$"
CACHE_CONTROL = "public, max-age=31536000, immutable"
#: Bytes per read-and-send step of a download. Each step costs a thread hop
#: for the read, an h11 event and a transport write, so Starlette's 64 KiB
#: default tops out near 0.4 GB/s; from 256 KiB to 4 MiB throughput is flat at
#: 1.2-1.4 GB/s (benchmarks/serve.py, 8 downloaders, 2 vCPUs). 512 KiB sits on
#: that plateau while keeping the buffer per open download small.
DOWNLOAD_CHUNK_BYTES = 512 * 1024

#: At most 19 digits a side (past any file size): int() of a huge digit string
#: is slow or raises, so a longer number makes the header invalid, i.e. ignored.
_BYTE_RANGE = re.compile(r"([0-9]{0,19})-([0-9]{0,19})")

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])


class ArtifactPublic(BaseModel):
    sha256: str
    length: int
    kind: str
    created: bool  # False when identical bytes were already stored
    created_at: datetime  # when the bytes were first stored


async def artifact_reader(
    svc: ServicesDep, credentials: Credentials
) -> Actor | DeviceCaller | None:
    """A viewer or better, or an enrolled device, unless the server serves artifacts publicly."""
    if svc.settings.public_artifacts:
        return None
    token = None if credentials is None else credentials.credentials
    if svc.fleet is not None and is_device_token(token):
        return await get_device(svc.fleet, credentials)
    return await require(Role.VIEWER)(await get_actor(svc, credentials))


Reader = Annotated[Actor | DeviceCaller | None, Depends(artifact_reader)]
Writer = Annotated[Actor, Depends(require(Role.OPERATOR))]
Digest = Annotated[str, Path(pattern=SHA256_PATTERN, description="lowercase hex SHA-256")]


# -- upload ---------------------------------------------------------------------


async def _body(request: Request, max_bytes: int) -> AsyncIterator[bytes]:
    """The request body as a stream, refused up front if declared too large or empty."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(
            f"Content-Length {declared} is over the upload limit of {max_bytes} bytes"
        )
    chunks = request.stream()
    async for chunk in chunks:
        if chunk:
            break
    else:
        raise InvalidInputError("the request body is empty: send the artifact's bytes")

    async def rest() -> AsyncIterator[bytes]:
        yield chunk
        async for more in chunks:
            yield more

    return rest()


def _record(svc: Services, blob: StoredBlob, kind: str, actor: Actor) -> ArtifactRecord:
    now = svc.clock()
    with svc.store.transaction() as tx:
        record = tx.add_artifact(
            ArtifactRecord(sha256=blob.sha256, length=blob.length, kind=kind, created_at=now)
        )
        change = {"length": blob.length, "kind": kind, "created": blob.created}
        audit(tx, actor.name, "artifact.upload", "artifact", blob.sha256, change, now)
    return record


@router.post(
    "",
    status_code=201,
    summary="Upload an artifact (raw bytes); it is addressed by its SHA-256",
    description="201 when the bytes are new, 200 when identical bytes were already stored "
    "(the existing record is returned). 413 over the server's upload limit, 422 for an "
    "empty body.",
    responses={200: {"model": ArtifactPublic, "description": "Already stored"}, **ERROR_RESPONSES},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_artifact(
    request: Request,
    response: Response,
    svc: ServicesDep,
    actor: Writer,
    kind: Annotated[ArtifactKind, Query(description="what the bytes are")],
) -> ArtifactPublic:
    limit = svc.settings.max_upload_bytes
    blob = await svc.artifacts.put_stream(await _body(request, limit), max_bytes=limit)
    record = await anyio.to_thread.run_sync(partial(_record, svc, blob, kind, actor))
    response.status_code = 201 if blob.created else 200
    return ArtifactPublic(
        sha256=record.sha256,
        length=record.length,
        kind=record.kind,
        created=blob.created,
        created_at=record.created_at,
    )


# -- download -------------------------------------------------------------------


class ArtifactResponse(FileResponse):
    """``FileResponse`` with a larger chunk and an already-vetted ``Range`` header."""

    chunk_size = DOWNLOAD_CHUNK_BYTES

    def __init__(
        self, path: os.PathLike[str], stat: os.stat_result, byte_range: str | None
    ) -> None:
        super().__init__(path, media_type="application/octet-stream", stat_result=stat)
        self.byte_range = byte_range

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k != b"range"]
        if self.byte_range is not None:
            headers.append((b"range", self.byte_range.encode("latin-1")))
        await super().__call__({**scope, "headers": headers}, receive, send)


class RangeNotSatisfiableError(Exception):
    """No range in a valid ``Range`` header overlaps the file."""


def vet_range(header: str | None, size: int) -> str | None:
    """The satisfiable part of a ``Range`` header in canonical form, or ``None`` to ignore it.

    Raises:
        RangeNotSatisfiableError: the header is valid but no range in it overlaps the file.
    """
    if header is None:
        return None
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    kept = []
    for raw in spec.split(","):
        part = raw.strip()
        if not part:
            continue
        match = _BYTE_RANGE.fullmatch(part)
        if match is None or not (match[1] or match[2]):
            return None
        first, last = match[1], match[2]
        if first and last and int(last) < int(first):
            return None
        if first:
            if int(first) < size:
                end = size - 1 if not last else min(int(last), size - 1)
                kept.append(f"{int(first)}-{end}")
        elif int(last) > 0 and size > 0:
            kept.append(f"{max(size - int(last), 0)}-{size - 1}")
    if not kept:
        raise RangeNotSatisfiableError
    return "bytes=" + ",".join(kept)


def _matches(if_none_match: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _serve(svc: Services, sha256: str, request: Request) -> Response:
    path = svc.artifacts.local_path(sha256)
    if path is None:
        if svc.artifacts.exists(sha256):
            # A remote store (S3, CDN) serves its artifacts from its own URL.
            raise ConfigurationError("this artifact store has no local files to serve")
        raise NotFoundError(f"no artifact with sha256 {sha256}")
    try:
        stat = path.stat()
    except FileNotFoundError as exc:
        raise NotFoundError(f"no artifact with sha256 {sha256}") from exc
    etag = f'"{sha256}"'
    cache = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Accept-Ranges": "bytes"}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and _matches(if_none_match, etag):
        return Response(status_code=304, headers=cache)
    # If-Range with any other validator asks for the whole (changed) file.
    if_range = request.headers.get("if-range")
    wanted = request.headers.get("range") if if_range in (None, etag) else None
    try:
        byte_range = vet_range(wanted, stat.st_size)
    except RangeNotSatisfiableError:
        refused = error_response(
            416, "range_not_satisfiable", f"no requested range lies within {stat.st_size} bytes"
        )
        refused.headers.update({**cache, "Content-Range": f"bytes */{stat.st_size}"})
        return refused
    response = ArtifactResponse(path, stat, byte_range)
    response.headers.update(cache)
    return response


DOWNLOAD_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    },
    206: {"description": "Partial content (Range)"},
    304: {"description": "Not modified (If-None-Match)"},
    416: {"description": "Range not satisfiable"},
    **ERROR_RESPONSES,
}


@router.get(
    "/{sha256:path}",
    summary="Download an artifact; supports Range and If-None-Match",
    response_class=Response,
    responses=DOWNLOAD_RESPONSES,
)
def download_artifact(sha256: Digest, request: Request, svc: ServicesDep, _: Reader) -> Response:
    return _serve(svc, sha256, request)


@router.head(
    "/{sha256:path}",
    summary="An artifact's headers (length, ETag) without its bytes",
    response_class=Response,
    responses=DOWNLOAD_RESPONSES,
)
def head_artifact(sha256: Digest, request: Request, svc: ServicesDep, _: Reader) -> Response:
    return _serve(svc, sha256, request)


__all__ = ["ArtifactPublic", "ArtifactResponse", "artifact_reader", "router", "vet_range"]
