"""The filesystem artifact store: the embedded default.

Theory of operation: an artifact lives at ``root/sha256/ab/<digest>``
(:func:`fleetcore.artifact.store_path`). A put streams the bytes into a fresh
temp file under ``root/tmp/``, hashing and counting as it writes, fsyncs it,
then hard-links it to its digest path. ``os.link`` fails when the target
exists, so of several concurrent puts of the same bytes exactly one creates the
file and the others see ``created=False``; nobody overwrites a complete copy.
The leaf directory is fsynced so the new name survives a crash, and the temp
file is always unlinked, on success, error or cancellation alike.

Invariants:

* a file at a digest path is complete: it only appears there after an fsync;
* memory stays flat: bytes pass through in batches of at most
  :data:`BATCH_BYTES` (plus one incoming chunk), never the whole artifact;
* over ``max_bytes`` raises :class:`PayloadTooLargeError` and keeps nothing;
* digests are checked before they touch a path, so ``open`` and
  ``local_path`` cannot escape ``root`` (:class:`UnsafePathError`).

The async :meth:`FilesystemArtifactStore.put_stream` gathers incoming chunks
into batches and hands each batch to a worker thread (hash + write), so the
event loop never waits on the disk; one thread hop per MiB costs next to
nothing against the write itself.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread

from control_plane.artifacts.port import StoredBlob
from control_plane.errors import NotFoundError, PayloadTooLargeError
from fleetcore.artifact import CHUNK_BYTES, store_path

#: Bytes gathered before one hash-and-write step in a worker thread.
BATCH_BYTES = CHUNK_BYTES
#: Temp files older than this are leftovers of a killed process (swept at start).
STALE_TEMP_S = 24 * 3600


class _TempSink:
    """A temp file being filled: counts, hashes and writes; ``discard`` always cleans up."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd: int | None = fd
        self.path = path
        self.length = 0
        self._hash = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> None:
        assert self.fd is not None
        self._hash.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.length += len(data)

    def write_all(self, parts: list[bytes]) -> None:
        self.write(parts[0] if len(parts) == 1 else b"".join(parts))

    def finish(self) -> str:
        """Make the bytes durable and read-only; return their digest."""
        assert self.fd is not None
        os.fchmod(self.fd, 0o444)  # immutable by intent; the data dir's mode guards access
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None
        return self._hash.hexdigest()

    def discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.path.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _too_large(max_bytes: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"artifact is larger than the limit of {max_bytes} bytes")


class FilesystemArtifactStore:
    """Content-addressed artifacts under one directory (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        (self.root / "sha256").mkdir(exist_ok=True)
        self._sweep_stale_temps()

    # -- reading ---------------------------------------------------------------
    def path_for(self, sha256: str) -> Path:
        """Where ``sha256`` lives or would live; UnsafePathError for a bad digest."""
        return self.root.joinpath(*store_path(sha256).parts)

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def local_path(self, sha256: str) -> Path | None:
        """The artifact's path, or ``None`` when it is not stored."""
        path = self.path_for(sha256)
        return path if path.is_file() else None

    def open(self, sha256: str) -> BinaryIO:
        path = self.path_for(sha256)
        try:
            return path.open("rb")
        except FileNotFoundError as exc:
            raise NotFoundError(f"no artifact with sha256 {sha256}") from exc

    # -- writing ---------------------------------------------------------------
    async def put_stream(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> StoredBlob:
        sink = self._new_sink()
        try:
            batch: list[bytes] = []
            pending = 0
            async for chunk in chunks:
                if sink.length + pending + len(chunk) > max_bytes:
                    raise _too_large(max_bytes)
                if not chunk:
                    continue
                batch.append(chunk)
                pending += len(chunk)
                if pending >= BATCH_BYTES:
                    await anyio.to_thread.run_sync(sink.write_all, batch)
                    batch, pending = [], 0
            if batch:
                await anyio.to_thread.run_sync(sink.write_all, batch)
            return await anyio.to_thread.run_sync(self._commit, sink)
        finally:
            sink.discard()

    def put_file(self, path: Path, *, max_bytes: int) -> StoredBlob:
        sink = self._new_sink()
        try:
            buffer = bytearray(BATCH_BYTES)
            view = memoryview(buffer)
            with Path(path).open("rb", buffering=0) as source:
                while count := source.readinto(view):
                    if sink.length + count > max_bytes:
                        raise _too_large(max_bytes)
                    sink.write(view[:count])
            return self._commit(sink)
        finally:
            sink.discard()

    # -- internals -------------------------------------------------------------
    def _new_sink(self) -> _TempSink:
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="put-", suffix=".part")
        return _TempSink(fd, Path(name))

    def _commit(self, sink: _TempSink) -> StoredBlob:
        """Make the temp file durable and give it its digest name, unless already there."""
        digest = sink.finish()
        final = self.path_for(digest)
        shard = final.parent
        try:
            shard.mkdir()
            _fsync_dir(shard.parent)
        except FileExistsError:
            pass
        created = self._link(sink.path, final, sink.length)
        if created:
            _fsync_dir(shard)
        return StoredBlob(sha256=digest, length=sink.length, created=created)

    @staticmethod
    def _link(temp: Path, final: Path, length: int) -> bool:
        """Put ``temp`` at ``final`` if nothing complete is there; True if this call did."""
        try:
            os.link(temp, final)
            return True
        except FileExistsError:
            if final.stat().st_size == length:
                return False
            # Same digest, other length: a damaged copy (e.g. edited by hand). Heal it.
            temp.replace(final)
            return True
        except OSError as exc:
            # A filesystem without hard links: replace is still atomic, and since
            # the bytes are identical a racing writer replaces like with like.
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
                raise
            if final.is_file() and final.stat().st_size == length:
                return False
            temp.replace(final)
            return True

    def _sweep_stale_temps(self) -> None:
        cutoff = time.time() - STALE_TEMP_S
        for entry in self.tmp_dir.glob("put-*.part"):
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()


__all__ = ["BATCH_BYTES", "FilesystemArtifactStore"]
