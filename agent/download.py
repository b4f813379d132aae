"""Artifact download: resumable, capped at the signed length, converted errors.

Theory of operation. :meth:`Downloader.fetch` fills ``downloads/<sha>.part``
from ``GET {server}/v1/artifacts/{sha256}`` (device token). It first hashes
whatever the partial file already holds into a
:class:`~fleetcore.artifact.StreamVerifier`, then asks for the rest with
``Range: bytes=N-``:

* ``206`` whose ``Content-Range`` starts at N: append;
* ``200``: the server ignored the range; start again from zero (truncate);
* ``416``: the partial file is complete (N equals the length) or unusable
  (start again from zero).

Every chunk goes through the verifier *before* it is written, so the first
byte past the signed length raises
:class:`~fleetcore.errors.LengthMismatchError` and is never stored; a declared
``Content-Length`` longer than what is missing is refused before reading.
Network errors, 5xx and short bodies are retried with exponential backoff up
to ``attempts`` times (:class:`~agent.errors.DownloadError` after that); a
refusal (404, 401) is not retried. ENOSPC, EFBIG and EDQUOT delete the partial
file and raise :class:`~agent.errors.DiskFullError`. The final hash check is
the caller's (the ``verifying`` state), so this module never vouches for the
bytes; it only guarantees there are not too many of them.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from agent.api import raise_for_status
from agent.errors import (
    DiskFullError,
    DownloadError,
    ServerError,
    SupersededError,
    TransportError,
    is_disk_full,
)
from fleetcore.artifact import StreamVerifier, check_digest
from fleetcore.errors import LengthMismatchError

log = logging.getLogger(__name__)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class DownloadConfig:
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    attempts: int = 5
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0


class _RetryableError(Exception):
    """Internal: this attempt failed in a way worth retrying."""


def _prefix_verifier(part: Path, length: int, sha256: str) -> tuple[StreamVerifier, int]:
    """A verifier fed with the partial file's bytes (a too-long file is discarded)."""
    verifier = StreamVerifier(length, sha256)
    try:
        size = part.stat().st_size
    except FileNotFoundError:
        return verifier, 0
    if size > length:
        part.unlink()
        return verifier, 0
    with part.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            verifier.update(chunk)
    return verifier, size


class Downloader:
    """Downloads artifacts by digest from the control plane."""

    def __init__(
        self,
        client: httpx.Client,
        config: DownloadConfig,
        *,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        """``wait(seconds)`` sleeps and returns True when it was interrupted."""
        self.client = client
        self.config = config
        self._wait = wait or _sleep

    def fetch(
        self,
        sha256: str,
        length: int,
        part: Path,
        *,
        cancelled: Callable[[], bool] = lambda: False,
        attempts_made: int = 0,
        on_attempt: Callable[[int], None] | None = None,
    ) -> None:
        """Download until ``part`` holds ``length`` bytes (not yet hash-checked).

        ``attempts_made`` failed attempts already count against the budget (they
        happened before a restart); ``on_attempt(total)`` is called after each
        failed one, so the caller can persist the count.
        """
        check_digest(sha256)
        part.parent.mkdir(parents=True, exist_ok=True)
        delay = self.config.backoff_initial_s
        failures = attempts_made
        while True:
            if cancelled():
                raise SupersededError("a newer desired state arrived during the download")
            try:
                if self._attempt(sha256, length, part, cancelled):
                    return
                raise _RetryableError(
                    "the server closed the connection before the end of the artifact"
                )
            except _RetryableError as exc:
                failures += 1
                log.warning("download of %s… failed (%d): %s", sha256[:12], failures, exc)
                if on_attempt is not None:
                    on_attempt(failures)
                if failures >= self.config.attempts:
                    raise DownloadError(
                        f"artifact {sha256[:16]}… not downloaded after {failures} attempts: {exc}"
                    ) from None
            except LengthMismatchError:
                part.unlink(missing_ok=True)
                raise
            except OSError as exc:
                part.unlink(missing_ok=True)
                if is_disk_full(exc):
                    raise DiskFullError(
                        f"no space left for artifact {sha256[:16]}… ({exc.strerror})"
                    ) from exc
                raise DownloadError(f"cannot write {part}: {exc.strerror or exc}") from exc
            jitter = random.uniform(0.8, 1.2)  # noqa: S311 - spreads retries, not security
            if self._wait(delay * jitter):
                raise SupersededError("download interrupted while waiting to retry")
            delay = min(delay * 2, self.config.backoff_max_s)

    def _attempt(self, sha256: str, length: int, part: Path, cancelled: Callable[[], bool]) -> bool:
        """One request; True when ``part`` is complete."""
        verifier, have = _prefix_verifier(part, length, sha256)
        if have == length:
            return True
        headers = {"Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        timeout = httpx.Timeout(self.config.read_timeout_s, connect=self.config.connect_timeout_s)
        try:
            with self.client.stream(
                "GET", f"/v1/artifacts/{sha256}", headers=headers, timeout=timeout
            ) as response:
                mode = self._mode(response, have, length)
                if mode is None:  # 416: start again from zero
                    part.unlink(missing_ok=True)
                    raise _RetryableError("the server refused the range of the partial download")
                if mode == "wb":
                    verifier = StreamVerifier(length, sha256)
                    have = 0
                declared = response.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > length - have:
                    raise LengthMismatchError(
                        f"the server offers {int(declared) + have} bytes for an artifact "
                        f"signed as {length} bytes"
                    )
                with part.open(mode) as handle:
                    for chunk in _chunks(response):
                        if cancelled():
                            raise SupersededError(
                                "a newer desired state arrived during the download"
                            )
                        verifier.update(chunk)  # raises before a byte past the length is kept
                        handle.write(chunk)
                    handle.flush()
                    os.fsync(handle.fileno())
        except httpx.HTTPError as exc:
            raise _RetryableError(f"{exc.__class__.__name__}: {exc}") from exc
        except DownloadError:
            raise
        except TransportError as exc:  # 5xx, 429: the server may recover
            raise _RetryableError(str(exc)) from exc
        return verifier.received == length

    @staticmethod
    def _mode(response: httpx.Response, have: int, length: int) -> str | None:
        status = response.status_code
        if status == 416:
            return None
        if status == 200:
            if have:
                log.info("server ignored the Range request; downloading from the start")
            return "wb"
        if status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            if match is None or int(match.group(1)) != have:
                raise _RetryableError("the server answered a different range than asked")
            return "ab"
        response.read()
        try:
            raise_for_status(response, "downloading the artifact")
        except ServerError as exc:
            raise DownloadError(str(exc)) from exc
        raise _RetryableError(f"unexpected HTTP {status}")


def _chunks(response: httpx.Response) -> Iterator[bytes]:
    # As received: a fixed chunk size would make httpx hold back up to a chunk,
    # which an interrupted transfer would then lose instead of resuming from.
    yield from response.iter_bytes()


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


__all__ = ["CHUNK_BYTES", "DownloadConfig", "Downloader"]
