"""The request-body cap: refused before the application (and its auth) sees a byte.

The app is the real ``create_app`` on SQLite; a spy middleware installed just
inside the cap records every request that gets through, and a wrapper around
the whole app counts the body chunks pulled from the client.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.config import Settings
from control_plane.db.migrate import upgrade
from control_plane.main import build_services, create_app
from control_plane.store import Role

LIMIT = 1 << 20
BIG = 2 * LIMIT
CHUNK = 64 * 1024


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Seen:
    """What passed the cap: (method, path, body bytes the app received)."""

    requests: list[tuple[str, str, int]] = field(default_factory=list)
    pulled: int = 0  # body messages taken from the client by anyone


class Spy:
    def __init__(self, app: ASGIApp, seen: Seen) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        entry = [scope["method"], scope["path"], 0]

        async def counting() -> Message:
            message = await receive()
            entry[2] += len(message.get("body", b""))
            return message

        await self.app(scope, counting, send)
        self.seen.requests.append((str(entry[0]), str(entry[1]), int(entry[2])))


@dataclass
class Env:
    client: httpx.AsyncClient
    seen: Seen
    admin: dict[str, str]
    operator: dict[str, str]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    settings = Settings(data_dir=tmp_path, max_upload_bytes=8 * LIMIT)
    assert settings.max_request_bytes == LIMIT  # the default
    upgrade(settings.db_url)
    services = build_services(settings)
    _, admin = services.auth.create_api_token("admin", Role.ADMIN, None, "test")
    _, operator = services.auth.create_api_token("ops", Role.OPERATOR, None, "test")
    app = create_app(settings, services=services)
    seen = Seen()
    app.user_middleware.append(Middleware(Spy, seen=seen))  # innermost: behind the cap

    async def outer(scope: Scope, receive: Receive, send: Send) -> None:
        async def pulling() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen.pulled += 1
            return message

        await app(scope, pulling, send)

    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Env(
            client,
            seen,
            {"Authorization": f"Bearer {admin}"},
            {"Authorization": f"Bearer {operator}"},
        )


def big_json() -> bytes:
    return json.dumps({"name": "x", "role": "viewer", "pad": "a" * BIG}).encode()


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
    assert str(LIMIT) in response.json()["error"]["message"]


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), CHUNK):
        yield data[offset : offset + CHUNK]


@pytest.mark.anyio
async def test_declared_oversized_body_is_refused_unread_and_unauthenticated(env: Env) -> None:
    response = await env.client.post(
        "/v1/tokens", content=big_json(), headers={"Content-Type": "application/json"}
    )
    assert_refused(response)
    assert response.headers["connection"] == "close"
    assert env.seen.requests == []  # the app, its auth included, never saw it
    assert env.seen.pulled == 0  # refused on the header alone


@pytest.mark.anyio
async def test_absurd_content_length_is_refused_not_a_server_error(env: Env) -> None:
    response = await env.client.post(
        "/v1/tokens", content=b"{}", headers={"Content-Length": "9" * 5000}
    )
    assert_refused(response)
    assert env.seen.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize("declared", [None, "100"], ids=["chunked", "lying-length"])
async def test_streamed_oversized_body_is_cut_off(env: Env, declared: str | None) -> None:
    headers = {**env.admin, "Content-Type": "application/json"}
    if declared is not None:
        headers["Content-Length"] = declared
    response = await env.client.post("/v1/tokens", content=chunks(big_json()), headers=headers)
    assert_refused(response)
    assert env.seen.requests == []
    assert env.seen.pulled <= LIMIT // CHUNK + 1  # stopped reading just past the limit
    tokens = await env.client.get("/v1/tokens", headers=env.admin)
    assert [t["name"] for t in tokens.json()] == ["admin", "ops"]


@pytest.mark.anyio
async def test_bodies_within_the_limit_reach_the_app(env: Env) -> None:
    anonymous = await env.client.post("/v1/tokens", json={"name": "ci", "role": "viewer"})
    assert anonymous.status_code == 401  # the app answered, after the cap let it through
    body = json.dumps({"name": "ci", "role": "viewer"}).encode()
    created = await env.client.post(
        "/v1/tokens", content=body, headers={**env.admin, "Content-Type": "application/json"}
    )
    assert created.status_code == 201, created.text
    streamed = json.dumps({"name": "cd", "role": "viewer", "pad": "a" * (LIMIT - 100)})
    chunked = await env.client.post(
        "/v1/tokens",
        content=chunks(streamed.encode()),
        headers={**env.admin, "Content-Type": "application/json"},
    )
    assert chunked.status_code == 201, chunked.text  # just under the limit, in 16 chunks
    assert chunked.json()["name"] == "cd"
    assert [(m, p, n) for m, p, n in env.seen.requests] == [
        ("POST", "/v1/tokens", len(anonymous.request.content)),
        ("POST", "/v1/tokens", len(body)),
        ("POST", "/v1/tokens", len(streamed)),
    ]


@pytest.mark.anyio
async def test_exactly_the_limit_passes(env: Env) -> None:
    response = await env.client.post("/v1/tokens", content=b" " * LIMIT, headers=env.admin)
    assert response.status_code == 422  # not valid JSON, but not refused for its size
    assert env.seen.requests == [("POST", "/v1/tokens", LIMIT)]


@pytest.mark.anyio
async def test_artifact_uploads_have_their_own_cap(env: Env) -> None:
    data = b"\x07" * BIG
    declared = await env.client.post(
        "/v1/artifacts", params={"kind": "npz"}, content=data, headers=env.operator
    )
    assert declared.status_code == 201, declared.text
    assert declared.json()["length"] == BIG
    streamed = await env.client.post(
        "/v1/artifacts", params={"kind": "npz"}, content=chunks(data), headers=env.operator
    )
    assert streamed.status_code == 200, streamed.text  # the same bytes, already stored
    # Only the upload is exempt: the same body elsewhere under /v1/artifacts is capped.
    other = await env.client.put(f"/v1/artifacts/{'0' * 64}", content=data, headers=env.operator)
    assert_refused(other)


def test_the_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFLEET_MAX_REQUEST_BYTES", "4096")
    assert Settings().max_request_bytes == 4096
