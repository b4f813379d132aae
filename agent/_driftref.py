"""Drift references of served releases: found in signed manifests, fetched by digest.

Theory of operation. The release manifest signs the drift reference's length
and SHA-256 (``drift_reference``, a :class:`~fleetcore.metadata.DigestRef`).
:class:`ReferenceStore` answers two questions for the drift probe:

* :meth:`~ReferenceStore.lookup`: which reference goes with the release being
  served? The manifests come from the update journal (verified before they
  were saved); each answer is remembered in the state database under
  ``drift_references`` (artifact sha256 → digest, or null for a release
  without one), so the committed release keeps its reference after a revert
  moved the journal on. A release never seen in a manifest has no known
  reference (``UNKNOWN``).
* :meth:`~ReferenceStore.load`: the parsed reference for a digest. The bytes
  are cached content-addressed under ``data_dir/references/<sha256>`` (not in
  the model store, whose garbage collection keeps only model blobs) and are
  downloaded, when missing, with the model artifacts' downloader
  (``GET /v1/artifacts/{sha256}``, resumable, never a byte past the signed
  length). They are hashed against the signed digest on every load, and only
  then parsed with :meth:`DriftReference.from_bytes`.

Fail closed: a download whose hash does not match is deleted, logged, and
the digest is not tried again for ``retry_rejected_s``; an unparseable
reference is treated the same way. Either way no summary is built from it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from agent.errors import AgentError, StateError
from agent.statedb import StateDB
from fleetcore.artifact import check_digest
from fleetcore.drift import DriftReference
from fleetcore.errors import EdgefleetError
from fleetcore.metadata import DigestRef, ReleaseManifest

log = logging.getLogger(__name__)
REFERENCES_DIR = Path("references")
_KEY = "drift_references"
#: Releases whose reference digest is remembered (the newest ones).
REMEMBER = 8


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


#: :meth:`ReferenceStore.lookup`'s answer for a release no manifest described.
UNKNOWN: Final = _Unknown()

Fetch = Callable[[str, int, Path], None]  # (sha256, length, part path): download, unverified


class ReferenceRejectedError(AgentError):
    """The bytes under a signed reference digest are not that reference."""

    check = "drift-reference"


class ReferenceStore:
    """Finds, fetches, verifies and caches the drift references of served releases."""

    def __init__(
        self,
        data_dir: Path,
        db: StateDB,
        *,
        fetch: Fetch,
        manifests: Callable[[], Iterable[ReleaseManifest]],
        max_bytes: int,
        retry_rejected_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dir = data_dir / REFERENCES_DIR
        self.db = db
        self._fetch, self._manifests = fetch, manifests
        self.max_bytes, self.retry_rejected_s, self._clock = max_bytes, retry_rejected_s, clock
        self._rejected: dict[str, float] = {}  # digest -> when it may be tried again

    def lookup(self, model: str, release: int, sha256: str) -> DigestRef | _Unknown | None:
        """The signed reference of the served release, None if it has none, or UNKNOWN."""
        for manifest in self._safe_manifests():
            if (manifest.model, manifest.release, manifest.artifact.sha256) == (
                model,
                release,
                sha256,
            ):
                self._remember(sha256, manifest.drift_reference)
                return manifest.drift_reference
        known = self.db.get(_KEY) or {}
        if not isinstance(known, dict) or sha256 not in known:
            return UNKNOWN
        entry = known[sha256]
        if entry is None:
            return None
        try:
            return DigestRef(sha256=check_digest(str(entry["sha256"])), length=int(entry["length"]))
        except (KeyError, TypeError, ValueError, EdgefleetError):
            return UNKNOWN

    def _safe_manifests(self) -> list[ReleaseManifest]:
        try:
            return list(self._manifests())
        except (AgentError, EdgefleetError) as exc:
            log.warning("cannot read the verified manifests: %s", exc)
            return []

    def _remember(self, artifact: str, ref: DigestRef | None) -> None:
        known = self.db.get(_KEY) or {}
        if not isinstance(known, dict):
            known = {}
        value = None if ref is None else ref.to_dict()
        if artifact in known and known[artifact] == value:
            return
        known.pop(artifact, None)
        known[artifact] = value  # dicts keep insertion order: the newest last
        while len(known) > REMEMBER:
            known.pop(next(iter(known)))
        self.db.put(_KEY, known)
        self._collect({str(v["sha256"]) for v in known.values() if isinstance(v, dict)})

    def _collect(self, keep: set[str]) -> None:
        if not self.dir.is_dir():
            return
        for path in self.dir.iterdir():
            if path.name.removesuffix(".part") not in keep:
                path.unlink(missing_ok=True)

    def path(self, sha256: str) -> Path:
        return self.dir / check_digest(sha256)

    def load(self, ref: DigestRef) -> DriftReference:
        """The verified, parsed reference ``ref`` names; downloads it when not cached.

        Raises:
            ReferenceRejectedError: the bytes do not match the signed digest or
                length, or do not parse (recently, or just now).
            TransportError: the download failed; worth trying again later.
        """
        digest = check_digest(ref.sha256)
        until = self._rejected.get(digest)
        if until is not None and self._clock() < until:
            raise ReferenceRejectedError(f"drift reference {digest[:16]}… was rejected recently")
        if ref.length > self.max_bytes:
            raise self._reject(digest, f"is signed as {ref.length} bytes, over the cap")
        cached = self.path(digest)
        data = _read(cached)
        if data is None or not _matches(data, ref):
            cached.unlink(missing_ok=True)
            part = self.dir / f"{digest}.part"
            self.dir.mkdir(parents=True, exist_ok=True)
            self._fetch(digest, ref.length, part)
            data = _read(part) or b""
            if not _matches(data, ref):
                part.unlink(missing_ok=True)
                raise self._reject(digest, "downloaded bytes do not match the signed digest")
            part.replace(cached)
        try:
            return DriftReference.from_bytes(data)
        except EdgefleetError as exc:
            raise self._reject(digest, f"does not parse: {exc}") from exc

    def _reject(self, digest: str, why: str) -> ReferenceRejectedError:
        self._rejected[digest] = self._clock() + self.retry_rejected_s
        log.error("drift reference %s… %s; drift summaries are off for it", digest[:16], why)
        return ReferenceRejectedError(f"drift reference {digest[:16]}… {why}")


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _matches(data: bytes, ref: DigestRef) -> bool:
    return len(data) == ref.length and hashlib.sha256(data).hexdigest() == ref.sha256


__all__ = ["REFERENCES_DIR", "UNKNOWN", "ReferenceRejectedError", "ReferenceStore"]
