"""The artifact store port: immutable bytes addressed by their SHA-256.

The filesystem adapter is the embedded default; an S3-compatible store or a
CDN can implement the same protocol. Identical bytes are stored once: ``put``
of bytes already present keeps the existing copy and reports it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    length: int
    created: bool  # False when identical bytes were already stored


class ArtifactStore(Protocol):
    async def put_stream(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> StoredBlob:
        """Store a stream; PayloadTooLargeError past ``max_bytes`` with nothing kept."""
        ...

    def put_file(self, path: Path, *, max_bytes: int) -> StoredBlob:
        """Store a local file's bytes (copied, hashed while copying)."""
        ...

    def exists(self, sha256: str) -> bool: ...

    def local_path(self, sha256: str) -> Path | None:
        """A filesystem path to serve or read from, if this store has one."""
        ...

    def open(self, sha256: str) -> BinaryIO:
        """Read the bytes; NotFoundError if absent."""
        ...


__all__ = ["ArtifactStore", "StoredBlob"]
