"""``Range`` positions too long to be a file offset: the header is ignored, never a 500.

``int()`` of a digit string over Python's limit (4,300 digits) raises, and a long
one is slow; positions are bounded to 19 digits, and a longer one makes the
header invalid, which RFC 9110 says to ignore (full 200). The app serves one
public artifact from a real filesystem store.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI

from control_plane.api import errors
from control_plane.api.routes import artifacts
from control_plane.api.routes.artifacts import RangeNotSatisfiableError, vet_range
from control_plane.artifacts import FilesystemArtifactStore
from control_plane.config import Settings
from control_plane.services import Services

DATA = bytes(range(256)) * 40
DIGEST = hashlib.sha256(DATA).hexdigest()
HUGE = "9" * 5000  # past int()'s digit limit
LONG = "1" + "0" * 19  # 20 digits: within int()'s limit, past the bound


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    blobs = FilesystemArtifactStore(tmp_path / "artifacts")
    source = tmp_path / "blob"
    source.write_bytes(DATA)
    assert blobs.put_file(source, max_bytes=len(DATA)).sha256 == DIGEST
    settings = Settings(data_dir=tmp_path, public_artifacts=True)
    app = FastAPI()
    app.state.services = Services(
        settings=settings,
        store=cast(Any, None),
        artifacts=blobs,
        auth=cast(Any, None),
        registry=cast(Any, None),
        releases=cast(Any, None),
        clock=cast(Any, None),
    )
    errors.install(app)
    app.include_router(artifacts.router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


OVERLONG = [
    f"bytes={HUGE}-",
    f"bytes=-{HUGE}",
    f"bytes=0-{HUGE}",
    f"bytes={HUGE}-{HUGE}",
    f"bytes=0-9, {HUGE}-",
    f"bytes={LONG}-",
    f"bytes=0-{LONG}",
    f"bytes=-{LONG}",
]


@pytest.mark.parametrize("header", OVERLONG)
def test_overlong_positions_make_the_header_invalid(header: str) -> None:
    assert vet_range(header, len(DATA)) is None


def test_nineteen_digits_still_count() -> None:
    nineteen = "9" * 19
    assert vet_range(f"bytes=0-{nineteen}", len(DATA)) == f"bytes=0-{len(DATA) - 1}"
    assert vet_range(f"bytes=-{nineteen}", len(DATA)) == f"bytes=0-{len(DATA) - 1}"
    with pytest.raises(RangeNotSatisfiableError):
        vet_range(f"bytes={nineteen}-", len(DATA))


@pytest.mark.anyio
@pytest.mark.parametrize("header", OVERLONG)
async def test_overlong_range_serves_the_whole_file(client: httpx.AsyncClient, header: str) -> None:
    for method in ("GET", "HEAD"):
        response = await client.request(
            method, f"/v1/artifacts/{DIGEST}", headers={"Range": header}
        )
        assert response.status_code == 200, (method, response.text)
        assert "content-range" not in response.headers
        assert response.headers["content-length"] == str(len(DATA))
    response = await client.get(f"/v1/artifacts/{DIGEST}", headers={"Range": header})
    assert response.content == DATA
