"""Streaming artifact verification and safe artifact names.

Theory of operation: artifact bytes are untrusted until their SHA-256 matches
the signed digest. :class:`StreamVerifier` hashes chunks as they arrive and
refuses the first chunk that would take the total past the signed length, so a
hostile server cannot fill a disk or memory with an endless stream.
:func:`verify_stream` reads a binary stream into one reused buffer and never
asks for more than one byte past the signed length, so memory stays constant
whatever the artifact size. Nothing here opens files or sockets: callers own
the I/O.

Artifacts are stored by digest. :func:`store_path` only accepts a 64-digit
lowercase hex digest, and :func:`safe_name` only a plain file name, so neither
can be turned into a path that escapes its directory.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePosixPath
from typing import Protocol

from fleetcore.errors import HashMismatchError, LengthMismatchError, UnsafePathError

#: Chunk size for streaming reads: large enough that per-call overhead vanishes
#: next to hashing, small enough to keep memory flat.
CHUNK_BYTES = 1 << 20
_DIGEST = re.compile(r"[0-9a-f]{64}")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,254}")


class SupportsReadInto(Protocol):
    """A binary stream such as an open file or a buffered HTTP body."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


class StreamVerifier:
    """Hash bytes incrementally against a signed length and SHA-256."""

    def __init__(self, length: int, sha256: str) -> None:
        if length < 0:
            raise ValueError("length must be non-negative")
        self.length = length
        self.sha256 = sha256
        self.received = 0
        self._hash = hashlib.sha256()

    @property
    def remaining(self) -> int:
        return self.length - self.received

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        """Add a chunk; raise at once if it takes the total past the signed length."""
        size = len(chunk)
        if self.received + size > self.length:
            raise LengthMismatchError(
                f"artifact is longer than its signed length of {self.length} bytes"
            )
        self._hash.update(chunk)
        self.received += size

    def finish(self) -> None:
        """Check that exactly the signed length arrived with the signed digest."""
        if self.received != self.length:
            raise LengthMismatchError(
                f"artifact is {self.received} bytes, shorter than its signed length "
                f"of {self.length}"
            )
        digest = self._hash.hexdigest()
        if digest != self.sha256:
            raise HashMismatchError(f"artifact sha256 is {digest}, signed sha256 is {self.sha256}")


def verify_stream(
    stream: SupportsReadInto, length: int, sha256: str, *, chunk_bytes: int = CHUNK_BYTES
) -> int:
    """Read ``stream`` to its end and verify it; return the number of bytes read.

    At most ``length + 1`` bytes are read: the extra byte is how an oversized
    stream is detected without reading the rest of it.

    Raises:
        LengthMismatchError: the stream is longer or shorter than ``length``.
        HashMismatchError: the digest differs from ``sha256``.
    """
    verifier = StreamVerifier(length, sha256)
    buffer = bytearray(chunk_bytes)
    view = memoryview(buffer)
    while True:
        want = min(chunk_bytes, verifier.remaining + 1)
        count = stream.readinto(view[:want])
        if not count:
            break
        verifier.update(view[:count])
    verifier.finish()
    return verifier.received


def check_digest(digest: str) -> str:
    """Return ``digest`` if it is a 64-digit lowercase hex SHA-256, else raise."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        shown = repr(digest)[:80]
        raise UnsafePathError(f"{shown} is not a sha256 hex digest")
    return digest


def store_path(digest: str) -> PurePosixPath:
    """Relative path of a content-addressed artifact: ``sha256/ab/abcdef…``."""
    check_digest(digest)
    return PurePosixPath("sha256", digest[:2], digest)


def safe_name(name: str) -> str:
    """Return ``name`` if it is a plain file name safe to join to a directory.

    Refuses separators, ``..``, leading dots, control characters and anything
    but letters, digits and ``._+-``.
    """
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise UnsafePathError(f"artifact name {name!r:.80} is not a plain file name")
    return name


__all__ = [
    "CHUNK_BYTES",
    "StreamVerifier",
    "SupportsReadInto",
    "check_digest",
    "safe_name",
    "store_path",
    "verify_stream",
]
