"""The artifact routes, in-process: upload, dedupe, size caps, roles, Range resume,
conditional requests, HEAD, and refusal of malformed digests.

The app holds only the artifacts router, a real filesystem store and real
``AuthService``; the database is a small in-memory fake (the end-to-end suite
runs the same routes under uvicorn on SQL).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI

from control_plane.api import errors
from control_plane.api.routes import artifacts
from control_plane.artifacts import FilesystemArtifactStore
from control_plane.auth import AuthService, hash_token
from control_plane.auth.tokens import OPERATOR_PREFIX, new_token
from control_plane.config import Settings
from control_plane.services import Services
from control_plane.store import ApiTokenRecord, ArtifactRecord, AuditRecord, Role

NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)
LIMIT = 4 << 20
DATA = (hashlib.sha256(b"model").digest() * 50_000)[:1_300_000]  # several download chunks
DIGEST = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class FakeStore:
    """The slice of the Store port these routes use, kept in dicts."""

    artifacts: dict[str, ArtifactRecord] = field(default_factory=dict)
    audits: list[AuditRecord] = field(default_factory=list)
    tokens: dict[str, ApiTokenRecord] = field(default_factory=dict)

    @contextmanager
    def transaction(self) -> Iterator[FakeStore]:
        yield self

    def add_artifact(self, record: ArtifactRecord) -> ArtifactRecord:
        return self.artifacts.setdefault(record.sha256, record)

    def get_artifact(self, sha256: str) -> ArtifactRecord | None:
        return self.artifacts.get(sha256)

    def add_audit(self, record: AuditRecord) -> AuditRecord:
        self.audits.append(record)
        return record

    def find_api_token(self, token_hash: str) -> ApiTokenRecord | None:
        return self.tokens.get(token_hash)

    def update_api_token(self, token_id: int, **changes: Any) -> ApiTokenRecord:
        for key, record in self.tokens.items():
            if record.id == token_id:
                self.tokens[key] = replace(record, **changes)
                return self.tokens[key]
        raise KeyError(token_id)


class SpyStore(FilesystemArtifactStore):
    """Records every digest that reached the store."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.asked: list[str] = []

    def path_for(self, sha256: str) -> Path:
        self.asked.append(sha256)
        return super().path_for(sha256)


@dataclass
class Env:
    client: httpx.AsyncClient
    store: FakeStore
    blobs: SpyStore
    settings: Settings
    tokens: dict[Role, str]

    def auth(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    async def upload(self, data: bytes, kind: str = "onnx") -> httpx.Response:
        return await self.client.post(
            "/v1/artifacts", params={"kind": kind}, content=data, headers=self.auth(Role.OPERATOR)
        )

    async def get(self, digest: str = DIGEST, **headers: str) -> httpx.Response:
        return await self.client.get(
            f"/v1/artifacts/{digest}", headers={**self.auth(Role.VIEWER), **headers}
        )


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = FakeStore()
    tokens = {}
    for number, role in enumerate(Role, start=1):
        secret = new_token(OPERATOR_PREFIX)
        store.tokens[hash_token(secret)] = ApiTokenRecord(
            name=f"{role.value}-token",
            role=role,
            token_hash=hash_token(secret),
            created_at=NOW,
            id=number,
        )
        tokens[role] = secret
    settings = Settings(data_dir=tmp_path, max_upload_bytes=LIMIT)
    blobs = SpyStore(tmp_path / "artifacts")
    services = Services(
        settings=settings,
        store=cast(Any, store),
        artifacts=blobs,
        auth=AuthService(cast(Any, store), lambda: NOW),
        registry=cast(Any, None),
        releases=cast(Any, None),
        clock=lambda: NOW,
    )
    app = FastAPI()
    app.state.services = services
    errors.install(app)
    app.include_router(artifacts.router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Env(client, store, blobs, settings, tokens)


def stored_files(env: Env) -> list[Path]:
    return [p for p in (env.blobs.root / "sha256").rglob("*") if p.is_file()]


# -- upload ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_upload_then_dedupe(env: Env) -> None:
    first = await env.upload(DATA)
    assert first.status_code == 201, first.text
    assert first.json() == {
        "sha256": DIGEST,
        "length": len(DATA),
        "kind": "onnx",
        "created": True,
        "created_at": "2025-01-01T00:00:00Z",
    }
    again = await env.upload(DATA)
    assert again.status_code == 200
    assert again.json()["created"] is False
    assert again.json()["sha256"] == DIGEST

    assert list(env.store.artifacts) == [DIGEST]
    assert [(a.action, a.actor, a.object_id, a.change["created"]) for a in env.store.audits] == [
        ("artifact.upload", "operator-token", DIGEST, True),
        ("artifact.upload", "operator-token", DIGEST, False),
    ]
    assert len(stored_files(env)) == 1


@pytest.mark.anyio
async def test_admin_may_upload_and_kinds_are_checked(env: Env) -> None:
    response = await env.client.post(
        "/v1/artifacts", params={"kind": "npz"}, content=b"x" * 10, headers=env.auth(Role.ADMIN)
    )
    assert response.status_code == 201
    assert response.json()["kind"] == "npz"
    for params in ({"kind": "exe"}, {}):
        bad = await env.client.post(
            "/v1/artifacts", params=params, content=b"x", headers=env.auth(Role.OPERATOR)
        )
        assert bad.status_code == 422
        assert bad.json()["error"]["code"] == "invalid_request"


@pytest.mark.anyio
async def test_empty_body_is_refused(env: Env) -> None:
    response = await env.upload(b"")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"
    assert stored_files(env) == []
    assert env.store.artifacts == {}


@pytest.mark.anyio
async def test_declared_length_over_the_limit_is_refused_unread(env: Env) -> None:
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(LIMIT // 65536 + 2):
            pulled += 1
            yield b"\0" * 65536

    response = await env.client.post(
        "/v1/artifacts",
        params={"kind": "onnx"},
        content=body(),
        headers={**env.auth(Role.OPERATOR), "Content-Length": str(LIMIT + 65536)},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert pulled <= 1  # refused on the header, before the body was read
    assert stored_files(env) == []
    assert list(env.blobs.tmp_dir.iterdir()) == []


@pytest.mark.anyio
async def test_chunked_body_over_the_limit_is_cut_off(env: Env) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(LIMIT // 65536 + 4):
            yield b"\1" * 65536

    response = await env.client.post(
        "/v1/artifacts", params={"kind": "onnx"}, content=body(), headers=env.auth(Role.OPERATOR)
    )
    assert response.status_code == 413
    assert stored_files(env) == []
    assert list(env.blobs.tmp_dir.iterdir()) == []
    assert env.store.artifacts == {}
    assert env.store.audits == []


@pytest.mark.anyio
async def test_chunked_body_under_the_limit_is_stored(env: Env) -> None:
    async def body() -> AsyncIterator[bytes]:
        for offset in range(0, len(DATA), 100_000):
            yield DATA[offset : offset + 100_000]

    response = await env.client.post(
        "/v1/artifacts", params={"kind": "onnx"}, content=body(), headers=env.auth(Role.OPERATOR)
    )
    assert response.status_code == 201
    assert response.json()["sha256"] == DIGEST


@pytest.mark.anyio
async def test_upload_roles(env: Env) -> None:
    viewer = await env.client.post(
        "/v1/artifacts", params={"kind": "onnx"}, content=DATA, headers=env.auth(Role.VIEWER)
    )
    assert viewer.status_code == 403
    assert viewer.json()["error"]["code"] == "forbidden"
    anonymous = await env.client.post("/v1/artifacts", params={"kind": "onnx"}, content=DATA)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    forged = await env.client.post(
        "/v1/artifacts",
        params={"kind": "onnx"},
        content=DATA,
        headers={"Authorization": f"Bearer {new_token(OPERATOR_PREFIX)}"},
    )
    assert forged.status_code == 401
    assert stored_files(env) == []


# -- download -------------------------------------------------------------------


@pytest.mark.anyio
async def test_download_headers_and_bytes(env: Env) -> None:
    await env.upload(DATA)
    response = await env.get()
    assert response.status_code == 200
    assert response.content == DATA
    assert response.headers["content-length"] == str(len(DATA))
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["etag"] == f'"{DIGEST}"'
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["accept-ranges"] == "bytes"


@pytest.mark.anyio
async def test_resume_from_the_middle(env: Env) -> None:
    await env.upload(DATA)
    received = bytearray()
    async with env.client.stream(
        "GET", f"/v1/artifacts/{DIGEST}", headers=env.auth(Role.VIEWER)
    ) as r:
        async for chunk in r.aiter_bytes():
            received += chunk
            if len(received) >= 500_000:
                break  # the connection drops mid-download
    cut = len(received) - 1234  # keep a prefix that is not chunk-aligned
    del received[cut:]

    rest = await env.get(Range=f"bytes={cut}-", **{"If-Range": f'"{DIGEST}"'})
    assert rest.status_code == 206
    assert rest.headers["content-range"] == f"bytes {cut}-{len(DATA) - 1}/{len(DATA)}"
    assert rest.headers["content-length"] == str(len(DATA) - cut)
    assert hashlib.sha256(bytes(received) + rest.content).hexdigest() == DIGEST


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", (0, 99)),
        ("bytes=-100", (len(DATA) - 100, len(DATA) - 1)),
        ("bytes=1299990-9999999", (1299990, len(DATA) - 1)),
        ("bytes=5000000-, 10-19", (10, 19)),  # the unsatisfiable part is dropped
        ("BYTES = 7-7", (7, 7)),
    ],
)
async def test_single_ranges(env: Env, header: str, expected: tuple[int, int]) -> None:
    await env.upload(DATA)
    response = await env.get(Range=header)
    start, end = expected
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert response.content == DATA[start : end + 1]
    assert response.headers["etag"] == f'"{DIGEST}"'


@pytest.mark.anyio
async def test_multiple_ranges(env: Env) -> None:
    await env.upload(DATA)
    response = await env.get(Range="bytes=0-9, 1000000-1000009, 5-14")
    assert response.status_code == 206
    content_type = response.headers["content-type"]
    assert content_type.startswith("multipart/byteranges; boundary=")
    boundary = content_type.split("boundary=")[1].encode()
    parts = response.content.split(b"--" + boundary)
    bodies = [p.split(b"\r\n\r\n", 1) for p in parts if b"Content-Range" in p]
    ranges = [re.findall(rb"Content-Range: bytes (\S+)", head) for head, _ in bodies]
    assert ranges == [[f"0-14/{len(DATA)}".encode()], [f"1000000-1000009/{len(DATA)}".encode()]]
    assert [b.removesuffix(b"\r\n") for _, b in bodies] == [DATA[0:15], DATA[1000000:1000010]]
    assert int(response.headers["content-length"]) == len(response.content)


@pytest.mark.anyio
@pytest.mark.parametrize("header", [f"bytes={len(DATA)}-", "bytes=-0", "bytes=9999999-9999999"])
async def test_unsatisfiable_range(env: Env, header: str) -> None:
    await env.upload(DATA)
    response = await env.get(Range=header)
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(DATA)}"
    assert response.json()["error"]["code"] == "range_not_satisfiable"


@pytest.mark.anyio
@pytest.mark.parametrize("header", ["items=0-5", "bytes=5-1", "bytes=abc", "bytes=-", "bytes"])
async def test_invalid_range_is_ignored(env: Env, header: str) -> None:
    await env.upload(DATA)
    response = await env.get(Range=header)
    assert response.status_code == 200
    assert response.content == DATA


@pytest.mark.anyio
async def test_if_range_with_another_validator_sends_everything(env: Env) -> None:
    await env.upload(DATA)
    response = await env.get(Range="bytes=10-", **{"If-Range": '"0000"'})
    assert response.status_code == 200
    assert response.content == DATA


@pytest.mark.anyio
@pytest.mark.parametrize("header", [f'"{DIGEST}"', f'W/"{DIGEST}"', f'"abc", "{DIGEST}"', "*"])
async def test_if_none_match(env: Env, header: str) -> None:
    await env.upload(DATA)
    response = await env.get(**{"If-None-Match": header})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == f'"{DIGEST}"'
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"

    other = await env.get(**{"If-None-Match": '"abc"'})
    assert other.status_code == 200
    assert other.content == DATA


@pytest.mark.anyio
async def test_head(env: Env) -> None:
    await env.upload(DATA)
    response = await env.client.head(f"/v1/artifacts/{DIGEST}", headers=env.auth(Role.VIEWER))
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len(DATA))
    assert response.headers["etag"] == f'"{DIGEST}"'
    ranged = await env.client.head(
        f"/v1/artifacts/{DIGEST}", headers={**env.auth(Role.VIEWER), "Range": "bytes=100-"}
    )
    assert ranged.status_code == 206
    assert ranged.headers["content-length"] == str(len(DATA) - 100)
    missing = await env.client.head(f"/v1/artifacts/{'0' * 64}", headers=env.auth(Role.VIEWER))
    assert missing.status_code == 404


@pytest.mark.anyio
async def test_unknown_digest_is_404(env: Env) -> None:
    response = await env.get("0" * 64)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "raw",
    [
        "..%2f..%2fetc%2fpasswd",
        "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "%2Fetc%2Fpasswd",
        "abc",
        DIGEST.upper(),
        DIGEST + "0",
        DIGEST[:62] + "%2f.",
    ],
)
async def test_malformed_digests_never_reach_the_store(env: Env, raw: str) -> None:
    await env.upload(DATA)
    env.blobs.asked.clear()
    url = httpx.URL("http://test/v1/artifacts/").copy_with(raw_path=f"/v1/artifacts/{raw}".encode())
    for method in ("GET", "HEAD"):
        response = await env.client.request(method, url, headers=env.auth(Role.VIEWER))
        assert response.status_code == 422, (method, raw)
    body = (await env.client.get(url, headers=env.auth(Role.VIEWER))).json()
    assert body["error"]["code"] == "invalid_request"
    assert env.blobs.asked == []


@pytest.mark.anyio
async def test_download_needs_a_viewer_unless_public(env: Env) -> None:
    await env.upload(DATA)
    anonymous = await env.client.get(f"/v1/artifacts/{DIGEST}")
    assert anonymous.status_code == 401
    env.settings.public_artifacts = True
    public = await env.client.get(f"/v1/artifacts/{DIGEST}")
    assert public.status_code == 200
    assert public.content == DATA


def test_openapi_documents_bodies_and_errors(tmp_path: Path) -> None:
    app = FastAPI()
    app.include_router(artifacts.router)
    spec = app.openapi()
    upload = spec["paths"]["/v1/artifacts"]["post"]
    assert "application/octet-stream" in upload["requestBody"]["content"]
    assert {"200", "201", "401", "403", "413", "422"} <= set(upload["responses"])
    assert upload["responses"]["413"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    download = spec["paths"]["/v1/artifacts/{sha256}"]
    assert {"get", "head"} <= set(download)
    assert {"200", "206", "304", "404", "416"} <= set(download["get"]["responses"])
    assert download["get"]["operationId"] != download["head"]["operationId"]
