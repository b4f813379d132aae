"""The filesystem artifact store: content addressing, dedupe under concurrency,
the size cap, temp-file hygiene, bounded memory and refusal of unsafe digests."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from control_plane.artifacts import FilesystemArtifactStore, StoredBlob
from control_plane.artifacts.filesystem import STALE_TEMP_S
from control_plane.errors import NotFoundError, PayloadTooLargeError
from fleetcore.errors import UnsafePathError

MIB = 1 << 20


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path) -> FilesystemArtifactStore:
    return FilesystemArtifactStore(tmp_path / "artifacts")


def payload(size: int, seed: int = 0) -> bytes:
    return (hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1))[:size]


async def chunked(data: bytes, chunk: int = 64 * 1024, pause: bool = False) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), chunk):
        if pause:
            await anyio.sleep(0)
        yield data[offset : offset + chunk]


def stored_files(store: FilesystemArtifactStore) -> list[Path]:
    return sorted(p for p in (store.root / "sha256").rglob("*") if p.is_file())


def temp_files(store: FilesystemArtifactStore) -> list[Path]:
    return list(store.tmp_dir.iterdir())


def test_put_file_stores_by_digest(store: FilesystemArtifactStore, tmp_path: Path) -> None:
    data = payload(3 * MIB + 17)
    source = tmp_path / "model.onnx"
    source.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()

    blob = store.put_file(source, max_bytes=len(data))

    assert blob == StoredBlob(sha256=digest, length=len(data), created=True)
    path = store.root / "sha256" / digest[:2] / digest
    assert stored_files(store) == [path]
    assert store.local_path(digest) == path
    assert store.exists(digest)
    with store.open(digest) as handle:
        assert handle.read() == data
    assert path.stat().st_mode & 0o222 == 0  # immutable by intent
    assert temp_files(store) == []


@pytest.mark.anyio
async def test_put_stream_matches_put_file_and_dedupes(
    store: FilesystemArtifactStore, tmp_path: Path
) -> None:
    data = payload(2 * MIB + 5)
    first = await store.put_stream(chunked(data), max_bytes=len(data))
    again = await store.put_stream(chunked(data, chunk=7000), max_bytes=len(data))
    source = tmp_path / "same.bin"
    source.write_bytes(data)
    from_file = store.put_file(source, max_bytes=len(data))

    assert first.created
    assert first.sha256 == hashlib.sha256(data).hexdigest()
    assert first.length == len(data)
    assert (again.created, from_file.created) == (False, False)
    assert again.sha256 == from_file.sha256 == first.sha256
    assert len(stored_files(store)) == 1
    assert temp_files(store) == []


@pytest.mark.anyio
async def test_empty_and_zero_length_chunks(store: FilesystemArtifactStore) -> None:
    async def with_gaps() -> AsyncIterator[bytes]:
        for part in (b"", b"abc", b"", b"def", b""):
            yield part

    blob = await store.put_stream(with_gaps(), max_bytes=6)
    assert blob.sha256 == hashlib.sha256(b"abcdef").hexdigest()
    assert blob.length == 6


def test_concurrent_puts_from_threads_store_once(
    store: FilesystemArtifactStore, tmp_path: Path
) -> None:
    data = payload(4 * MIB, seed=1)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    barrier = threading.Barrier(8)
    results: list[StoredBlob] = []
    errors: list[BaseException] = []

    def put() -> None:
        try:
            barrier.wait()
            results.append(store.put_file(source, max_bytes=len(data)))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(results) == 8
    assert {r.sha256 for r in results} == {hashlib.sha256(data).hexdigest()}
    assert sum(r.created for r in results) == 1
    assert len(stored_files(store)) == 1
    assert stored_files(store)[0].read_bytes() == data
    assert temp_files(store) == []


@pytest.mark.anyio
async def test_concurrent_puts_from_tasks_store_once(store: FilesystemArtifactStore) -> None:
    data = payload(3 * MIB, seed=2)
    results: list[StoredBlob] = []

    async def put() -> None:
        results.append(await store.put_stream(chunked(data, pause=True), max_bytes=len(data)))

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(put)

    assert len(results) == 8
    assert {r.sha256 for r in results} == {hashlib.sha256(data).hexdigest()}
    assert sum(r.created for r in results) == 1
    assert len(stored_files(store)) == 1
    assert temp_files(store) == []


@pytest.mark.anyio
async def test_stream_over_the_cap_keeps_nothing(store: FilesystemArtifactStore) -> None:
    data = payload(2 * MIB)
    consumed = 0

    async def counting() -> AsyncIterator[bytes]:
        nonlocal consumed
        async for chunk in chunked(data):
            consumed += len(chunk)
            yield chunk

    with pytest.raises(PayloadTooLargeError):
        await store.put_stream(counting(), max_bytes=MIB)
    assert consumed <= MIB + 64 * 1024  # stopped at the first chunk past the cap
    assert stored_files(store) == []
    assert temp_files(store) == []

    exact = await store.put_stream(chunked(data[:MIB]), max_bytes=MIB)
    assert exact.length == MIB


def test_file_over_the_cap_keeps_nothing(store: FilesystemArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(payload(3 * MIB))
    with pytest.raises(PayloadTooLargeError):
        store.put_file(source, max_bytes=3 * MIB - 1)
    assert stored_files(store) == []
    assert temp_files(store) == []


@pytest.mark.anyio
async def test_failing_stream_removes_its_temp_file(store: FilesystemArtifactStore) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield payload(2 * MIB)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.put_stream(broken(), max_bytes=10 * MIB)
    assert stored_files(store) == []
    assert temp_files(store) == []


@pytest.mark.anyio
async def test_cancelled_put_removes_its_temp_file(store: FilesystemArtifactStore) -> None:
    started = anyio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield payload(2 * MIB)
        started.set()
        await anyio.sleep(60)
        yield b"never"

    async with anyio.create_task_group() as tg:

        async def put() -> None:
            await store.put_stream(stalls(), max_bytes=10 * MIB)

        tg.start_soon(put)
        await started.wait()
        assert len(temp_files(store)) == 1  # the upload is in flight
        tg.cancel_scope.cancel()

    assert stored_files(store) == []
    assert temp_files(store) == []


@pytest.mark.anyio
async def test_put_stream_memory_stays_flat(store: FilesystemArtifactStore) -> None:
    size = 48 * MIB
    block = payload(64 * 1024)

    async def source() -> AsyncIterator[bytes]:
        for _ in range(size // len(block)):
            yield bytes(block)  # a fresh object per chunk, as a socket would hand over

    tracemalloc.start()
    try:
        blob = await store.put_stream(source(), max_bytes=size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert blob.length == size
    assert peak < 8 * MIB, f"peak {peak} bytes for a {size}-byte artifact"


@pytest.mark.parametrize(
    "digest",
    [
        "../../etc/passwd",
        "..",
        "/etc/passwd",
        "A" * 64,
        "0" * 63,
        "0" * 65,
        "0" * 62 + "/x",
        "g" * 64,
    ],
)
def test_unsafe_digests_are_refused(store: FilesystemArtifactStore, digest: str) -> None:
    with pytest.raises(UnsafePathError):
        store.open(digest)
    with pytest.raises(UnsafePathError):
        store.local_path(digest)
    with pytest.raises(UnsafePathError):
        store.exists(digest)


def test_missing_digest(store: FilesystemArtifactStore) -> None:
    missing = "0" * 64
    with pytest.raises(NotFoundError):
        store.open(missing)
    assert store.local_path(missing) is None
    assert not store.exists(missing)


def test_damaged_copy_is_replaced(store: FilesystemArtifactStore, tmp_path: Path) -> None:
    data = payload(MIB)
    source = tmp_path / "a.bin"
    source.write_bytes(data)
    digest = store.put_file(source, max_bytes=MIB).sha256
    path = store.path_for(digest)
    path.chmod(0o644)
    path.write_bytes(data[: MIB // 2])  # truncated by hand

    assert store.put_file(source, max_bytes=MIB).created
    assert path.read_bytes() == data


def test_stale_temp_files_are_swept_at_start(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    FilesystemArtifactStore(root)
    stale = root / "tmp" / "put-old.part"
    fresh = root / "tmp" / "put-new.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    old = time.time() - STALE_TEMP_S - 60
    os.utime(stale, (old, old))

    FilesystemArtifactStore(root)

    assert not stale.exists()
    assert fresh.exists()
