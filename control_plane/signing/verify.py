"""Offline verification of a release: root chain, manifest, then artifact bytes.

This is the device's check, run by an operator: the same :class:`TrustedSet`
rules, then a streamed hash of the artifact capped at its signed length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fleetcore.artifact import verify_stream
from fleetcore.canonical import MAX_METADATA_BYTES
from fleetcore.errors import MetadataError, SmokeTestError
from fleetcore.metadata import ReleaseManifest
from fleetcore.runtimes import SmokeResult, load_model, run_smoke_test
from fleetcore.trust import TrustedSet


@dataclass(frozen=True)
class VerifyReport:
    manifest: ReleaseManifest
    digest: str
    root_version: int
    artifact_bytes: int
    smoke: SmokeResult | None = None


def read_metadata(path: Path) -> bytes:
    """Read a metadata file without ever loading more than the metadata cap."""
    with path.open("rb") as handle:
        data = handle.read(MAX_METADATA_BYTES + 1)
    if len(data) > MAX_METADATA_BYTES:
        raise MetadataError(f"{path} is larger than the {MAX_METADATA_BYTES}-byte metadata limit")
    return data


def run_smoke(manifest: ReleaseManifest, artifact: Path) -> SmokeResult:
    """Run the signed smoke vectors in the model's real runtime."""
    runtime = load_model(artifact, manifest.format)
    smoke = manifest.smoke_tests
    result = run_smoke_test(
        runtime,
        [v.inputs for v in smoke.vectors],
        [v.expected for v in smoke.vectors],
        atol=smoke.atol,
        rtol=smoke.rtol,
    )
    if not result.passed:
        raise SmokeTestError(f"{runtime.runtime} {runtime.runtime_version}: {result.detail}")
    return result


def verify_release_files(
    manifest: Path, artifact: Path, roots: Sequence[Path], now: datetime, *, smoke: bool = False
) -> VerifyReport:
    """Walk ``roots`` (first one pinned), verify ``manifest``, then stream ``artifact``.

    With ``smoke``, also run the signed smoke vectors, but only after the
    artifact's hash matched: unverified bytes never reach a model parser.
    """
    trusted = TrustedSet(read_metadata(roots[0]) if roots else None)
    for path in roots[1:]:
        trusted.update_root(read_metadata(path))
    release = trusted.verify_release(read_metadata(manifest), now)
    signed = release.manifest.artifact
    with artifact.open("rb") as handle:
        count = verify_stream(handle, signed.length, signed.sha256)
    result = run_smoke(release.manifest, artifact) if smoke else None
    return VerifyReport(release.manifest, release.digest, trusted.root.version, count, result)


__all__ = ["VerifyReport", "read_metadata", "run_smoke", "verify_release_files"]
