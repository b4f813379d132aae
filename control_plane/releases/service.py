"""Releases: turning a validated version into a signed release manifest.

Theory of operation: ``create`` builds the manifest from what the validation
gate recorded (schema, smoke vectors, drift reference) and the registry
(artifact, quantization, provenance), assigns the model's next release
counter, and either signs it at once with the release key held by the server,
or stores it unsigned (``pending``) for an offline key holder. Offline
signatures come back through ``attach_signatures``; each must be a valid
release-role signature under the current root, and the release becomes
``released`` once the threshold is met. Nothing is stored that does not
verify: every signed manifest passes :class:`fleetcore.trust.TrustedSet`
before it is written.

``revoke`` marks a release and its version revoked and records the artifact
hash; every manifest signed afterwards for the model lists it, and director
assignments carry it to devices.
"""

from __future__ import annotations

import random
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from control_plane.audit import audit
from control_plane.config import Settings
from control_plane.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    SigningError,
    StateError,
)
from control_plane.registry.service import RegistryService
from control_plane.releases.keys import ReleaseKeys
from control_plane.signing.manifests import RUNTIME_TAG, onnx_opset
from control_plane.store import (
    ModelVersionRecord,
    ReleaseRecord,
    ReleaseState,
    RevocationRecord,
    Store,
    VersionState,
)
from fleetcore import __version__
from fleetcore.envelope import Envelope, Signature
from fleetcore.errors import EdgefleetError
from fleetcore.metadata import (
    ArtifactInfo,
    Compatibility,
    DigestRef,
    ReleaseManifest,
    SmokeTests,
)
from fleetcore.tensors import TensorSpec
from fleetcore.trust import manifest_digest

#: Released manifests kept in memory; each is a few kilobytes.
MANIFEST_CACHE_ENTRIES = 1024
#: Tries to take the next release counter when concurrent releases of one model
#: compete; every round lets at least one of them through.
COUNTER_ATTEMPTS = 20


def _artifact_name(record: ModelVersionRecord) -> str:
    """A plain file name for the artifact (no ':' and no '..', see ``safe_name``)."""
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", f"{record.model}-{record.version}.{record.format}")
    return re.sub(r"\.{2,}", "_", name)


def _readable(envelope: Envelope) -> None:
    """Refuse to store a manifest that devices (or this server) could not parse back."""
    try:
        ReleaseManifest.from_dict(Envelope.from_bytes(envelope.to_bytes()).signed)
    except EdgefleetError as exc:
        raise InvalidInputError(f"the manifest would not be readable: {exc.one_line()}") from exc


class ReleaseService:
    def __init__(
        self,
        store: Store,
        registry: RegistryService,
        settings: Settings,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.clock = clock
        self.keys = ReleaseKeys(settings.keys_path, settings.key_passphrase_env)
        # Released manifests are immutable (revocation does not change their
        # bytes), so they are cached; pending ones change as signatures arrive.
        self._manifests: OrderedDict[tuple[str, int], tuple[bytes, str]] = OrderedDict()

    # -- queries -------------------------------------------------------------

    def get(self, model: str, counter: int) -> ReleaseRecord:
        record = self.store.get_release(model, counter)
        if record is None:
            raise NotFoundError(f"no release {counter} of {model!r}")
        return record

    def cached_manifest(self, model: str, counter: int) -> tuple[bytes, str] | None:
        """A released manifest from memory, or ``None`` (no database access)."""
        key = (model, counter)
        cached = self._manifests.get(key)
        if cached is not None:
            self._manifests.move_to_end(key)
        return cached

    def manifest(self, model: str, counter: int) -> tuple[bytes, str]:
        """The manifest's bytes and ETag, as devices download them."""
        key = (model, counter)
        cached = self.cached_manifest(model, counter)
        if cached is not None:
            return cached
        record = self.get(model, counter)
        entry = (record.manifest, f'"{record.manifest_sha256}-{len(record.manifest)}"')
        if record.state is not ReleaseState.PENDING:
            self._manifests[key] = entry
            if len(self._manifests) > MANIFEST_CACHE_ENTRIES:
                self._manifests.popitem(last=False)
        return entry

    def for_version(self, model: str, version: str) -> ReleaseRecord:
        record = self.store.get_release_for_version(self.registry.get(model, version).id)
        if record is None:
            raise NotFoundError(f"{model}@{version} has no release")
        return record

    def list_releases(self, model: str | None = None) -> list[ReleaseRecord]:
        return self.store.list_releases(model)

    def version_of(self, release: ReleaseRecord) -> ModelVersionRecord:
        version = self.store.get_version_by_id(release.version_id)
        if version is None:
            raise NotFoundError(f"release {release.model}#{release.counter} lost its version")
        return version

    # -- commands ------------------------------------------------------------

    def create(
        self,
        model: str,
        version: str,
        actor: str,
        *,
        offline: bool = False,
        expires_in_days: int | None = None,
        floor: int = 0,
    ) -> ReleaseRecord:
        record = self.registry.get(model, version)
        self._check_releasable(record)
        days = expires_in_days or self.settings.release_expires_days
        for _ in range(COUNTER_ATTEMPTS):
            try:
                return self._create_once(record, actor, offline, timedelta(days=days), floor)
            except ConflictError:
                # Another release of this model took the counter: take the next
                # one. A second release of the same version stays a conflict.
                self._check_releasable(record)
                time.sleep(random.uniform(0.0, 0.02))  # noqa: S311 - jitter, not a secret
        raise ConflictError(f"could not assign a release counter for {model}; try again")

    def _check_releasable(self, record: ModelVersionRecord) -> None:
        ref = f"{record.model}@{record.version}"
        existing = self.store.get_release_for_version(record.id)
        if existing is not None:
            raise ConflictError(
                f"{ref} is already release {existing.counter} ({existing.state.value})"
            )
        if record.state is not VersionState.VALIDATED:
            why = "; ".join(record.reasons) or record.state.value
            raise StateError(f"{ref} is {record.state.value}, not validated: {why}")

    def _create_once(
        self,
        record: ModelVersionRecord,
        actor: str,
        offline: bool,
        lifetime: timedelta,
        floor: int,
    ) -> ReleaseRecord:
        now = self.clock().replace(microsecond=0)
        with self.store.transaction() as tx:
            # Counter and revocations are read inside the write transaction, so
            # the manifest lists every hash revoked before it was stored.
            counter = tx.next_release_counter(record.model)
            if floor > counter:
                raise StateError(f"floor {floor} is above this release's counter {counter}")
            manifest = self._manifest(tx, record, counter, now, lifetime, floor, actor)
            envelope = Envelope(manifest.to_dict())
            if offline:
                _readable(envelope)
                state = ReleaseState.PENDING
            else:
                for key in self.keys.release_signers():
                    envelope.sign(key)
                self.keys.verify(envelope.to_bytes(), now)
                state = ReleaseState.RELEASED
            created = tx.create_release(
                ReleaseRecord(
                    model=record.model,
                    counter=counter,
                    version_id=record.id,
                    state=state,
                    manifest=envelope.to_bytes(),
                    manifest_sha256=manifest_digest(envelope.signed),
                    created_at=now,
                    created_by=actor,
                )
            )
            if state is ReleaseState.RELEASED:
                tx.update_version(
                    record.id,
                    state=VersionState.RELEASED,
                    updated_at=now,
                    expect_state=VersionState.VALIDATED,
                )
            change = {"counter": counter, "state": state.value, "version": record.version}
            change["floor"] = floor
            audit(tx, actor, "release.create", "release", f"{record.model}#{counter}", change, now)
        return created

    def attach_signatures(
        self, model: str, counter: int, signatures: list[Signature], actor: str
    ) -> ReleaseRecord:
        release = self.get(model, counter)
        if release.state is not ReleaseState.PENDING:
            raise StateError(f"release {counter} of {model} is {release.state.value}, not pending")
        envelope = Envelope.from_bytes(release.manifest)
        root = self.keys.root()
        role = root.role("release")
        for signature in signatures:
            probe = Envelope(envelope.signed, [signature])
            if not probe.valid_keyids(role.keyids, root.keys):
                raise SigningError(
                    f"the signature by key {signature.keyid[:16]}… is not a valid release-role "
                    f"signature of this manifest under root v{root.version} (if the manifest was "
                    "rebuilt after a revocation, download it again and sign that)"
                )
            envelope.signatures = [s for s in envelope.signatures if s.keyid != signature.keyid]
            envelope.signatures.append(signature)
        now = self.clock()
        valid = envelope.valid_keyids(role.keyids, root.keys)
        released = len(valid) >= role.threshold
        if released:
            self.keys.verify(envelope.to_bytes(), now)
        with self.store.transaction() as tx:
            # Only if nothing changed since it was read: a revoke or another
            # attach in between makes this one fail instead of undoing theirs.
            updated = tx.update_release(
                release.id,
                manifest=envelope.to_bytes(),
                state=ReleaseState.RELEASED if released else None,
                expect_state=ReleaseState.PENDING,
                expect_manifest=release.manifest,
            )
            if released:
                tx.update_version(
                    release.version_id,
                    state=VersionState.RELEASED,
                    updated_at=now,
                    expect_state=VersionState.VALIDATED,
                )
            change = {"signatures": len(valid), "threshold": role.threshold, "released": released}
            audit(tx, actor, "release.sign", "release", f"{model}#{counter}", change, now)
        return updated

    def revoke(self, model: str, counter: int, reason: str, actor: str) -> ReleaseRecord:
        release = self.get(model, counter)
        if release.state is ReleaseState.REVOKED:
            raise StateError(f"release {counter} of {model} is already revoked")
        version = self.version_of(release)
        now = self.clock().replace(microsecond=0)
        with self.store.transaction() as tx:
            updated = tx.update_release(
                release.id,
                state=ReleaseState.REVOKED,
                revoked_at=now,
                revoke_reason=reason,
                expect_state=release.state,
            )
            tx.update_version(version.id, state=VersionState.REVOKED, updated_at=now)
            tx.add_revocation(RevocationRecord(version.artifact_sha256, model, reason, now, actor))
            rebuilt = self._rebuild_pending(tx, model, now, actor)
            change = {"reason": reason, "sha256": version.artifact_sha256, "rebuilt": rebuilt}
            audit(tx, actor, "release.revoke", "release", f"{model}#{counter}", change, now)
        return updated

    def _rebuild_pending(self, tx: Store, model: str, now: datetime, actor: str) -> list[int]:
        """Pending manifests of ``model`` get the new revocation; their signatures are void."""
        rebuilt = []
        for pending in tx.list_releases(model):
            if pending.state is not ReleaseState.PENDING:
                continue
            old = ReleaseManifest.from_dict(Envelope.from_bytes(pending.manifest).signed)
            version = tx.get_version_by_id(pending.version_id)
            if version is None:
                continue
            manifest = self._manifest(
                tx, version, pending.counter, now, old.expires - old.issued, old.floor, actor
            )
            envelope = Envelope(manifest.to_dict())
            _readable(envelope)
            tx.update_release(
                pending.id,
                manifest=envelope.to_bytes(),
                expect_state=ReleaseState.PENDING,
                expect_manifest=pending.manifest,
            )
            rebuilt.append(pending.counter)
        return rebuilt

    # -- manifest ------------------------------------------------------------------

    def _manifest(
        self,
        store: Store,
        record: ModelVersionRecord,
        counter: int,
        now: datetime,
        lifetime: timedelta,
        floor: int,
        actor: str,
    ) -> ReleaseManifest:
        artifact = store.get_artifact(record.artifact_sha256)
        if artifact is None:
            raise NotFoundError(f"artifact of {record.model}@{record.version} is missing")
        drift = None
        if record.drift_reference_sha256:
            ref = store.get_artifact(record.drift_reference_sha256)
            if ref is not None:
                drift = DigestRef(ref.sha256, ref.length)
        opset = None
        if record.format == "onnx":
            opset = onnx_opset(self.registry.local_path(record.artifact_sha256))
        schema = record.io_schema
        provenance: dict[str, Any] = {
            **record.provenance,
            "model_version": record.version,
            "registered_by": record.created_by,
            "released_by": actor,
            "control_plane": f"edgefleet {__version__}",
        }
        if record.quantization:
            provenance["quantization"] = record.quantization
        try:
            return ReleaseManifest(
                model=record.model,
                release=counter,
                version=record.version,
                issued=now,
                expires=now + lifetime,
                artifact=ArtifactInfo(
                    artifact.length,
                    artifact.sha256,
                    name=_artifact_name(record),
                ),
                format=record.format,
                compatibility=Compatibility(
                    runtime=RUNTIME_TAG[record.format],
                    inputs=tuple(TensorSpec.from_dict(s) for s in schema["inputs"]),
                    outputs=tuple(TensorSpec.from_dict(s) for s in schema["outputs"]),
                    opset=opset,
                ),
                smoke_tests=SmokeTests.from_dict(record.validation["smoke_tests"]),
                quantization=dict(record.quantization),
                drift_reference=drift,
                floor=floor,
                revoked=tuple(sorted({r.sha256 for r in store.list_revocations(record.model)})),
                provenance=provenance,
            )
        except (KeyError, EdgefleetError) as exc:
            raise StateError(
                f"{record.model}@{record.version} has no usable validation record ({exc}); "
                "validate it again"
            ) from exc


__all__ = ["ReleaseService"]
