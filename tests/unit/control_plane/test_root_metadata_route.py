"""``GET /v1/metadata/root/{version}``: versions are bounded, so absurd ones are a 422.

Without a bound, a version of hundreds of digits became a file name too long
for the operating system, and the request ended in a 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI

from control_plane.api import errors
from control_plane.api.routes import meta
from control_plane.api.routes.meta import MAX_ROOT_VERSION
from control_plane.config import Settings
from control_plane.releases.keys import ReleaseKeys
from control_plane.services import Services


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(data_dir=tmp_path)
    (settings.keys_path / "root").mkdir(parents=True)
    keys = ReleaseKeys(settings.keys_path, settings.key_passphrase_env)
    (keys.keydir.root_path(1)).write_bytes(b'{"signed": {}, "signatures": []}')
    app = FastAPI()
    app.state.services = Services(
        settings=settings,
        store=cast(Any, None),
        artifacts=cast(Any, None),
        auth=cast(Any, None),
        registry=cast(Any, None),
        releases=cast(Any, SimpleNamespace(keys=keys)),
        clock=cast(Any, None),
    )
    errors.install(app)
    app.include_router(meta.router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def test_the_bound_is_a_signed_32_bit_int() -> None:
    assert MAX_ROOT_VERSION == 2**31 - 1


@pytest.mark.anyio
@pytest.mark.parametrize("version", ["9" * 300, "9" * 5000, str(2**31), "0", "-1"])
async def test_out_of_range_versions_are_refused(client: httpx.AsyncClient, version: str) -> None:
    response = await client.get(f"/v1/metadata/root/{version}")
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"


@pytest.mark.anyio
async def test_versions_in_range_are_looked_up(client: httpx.AsyncClient) -> None:
    found = await client.get("/v1/metadata/root/1")
    assert found.status_code == 200
    assert found.content == b'{"signed": {}, "signatures": []}'
    missing = await client.get(f"/v1/metadata/root/{MAX_ROOT_VERSION}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
