"""The director: signing per-device assignments and serving the desired state.

Theory of operation: an operator assigns a *released* release to a device.
The director checks that the release is released (not pending, not revoked,
not expired) and that the device's enrolled capabilities can run it, then, in
one transaction, takes the device's next assignment sequence, signs an
:class:`~fleetcore.metadata.Assignment` with the director key(s) the server
holds, checks that a device would accept it (:class:`fleetcore.trust.TrustedSet`),
stores it and writes the audit entry. After the commit it tells its listeners
(the long-poll waiters and the MQTT publisher) that the device's desired state
changed.

An assignment repeats the manifest's facts and names it by
:func:`fleetcore.trust.manifest_digest`; ``revoked`` carries every hash revoked
for the model, so a device refuses them even before a new manifest arrives.
Its lifetime is ``assignment_expires_days``, never past the manifest's expiry.
:meth:`Director.renew_due` re-signs the same release under a new sequence when
less than half of that lifetime is left; a renewal only happens if nobody
assigned the device meanwhile (compare-and-set on the sequence), so several
workers renewing at once produce one new assignment.

The desired state of a device is its newest assignment plus the manifest it
names (:class:`fleetcore.protocol.DesiredState`); encoded documents are cached.

Assigning a release to thousands of devices repeats work that depends only on
the release and the keys, so it is done once and remembered: the release
manifest verified under the current root (its :class:`TrustedSet` and
:class:`VerifiedRelease`, reused while the root's bytes and the manifest's
bytes are the same and neither has expired; each assignment is still
verified in full against a private copy of that trust state) and the director
signing keys (reused for :data:`SIGNERS_CACHE_S` seconds under the same root,
so keys added or rotated on disk are picked up without a restart).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from control_plane.audit import audit
from control_plane.config import Settings
from control_plane.devices.matching import incompatibilities
from control_plane.errors import InvalidInputError, NotFoundError, SigningError, StateError
from control_plane.releases.service import ReleaseService
from control_plane.store import (
    DeviceAssignmentRecord,
    DeviceRecord,
    ReleaseRecord,
    ReleaseState,
    Store,
)
from fleetcore.envelope import Envelope
from fleetcore.errors import EdgefleetError
from fleetcore.keys import PrivateKey
from fleetcore.metadata import Assignment, ReleaseManifest, format_time
from fleetcore.protocol import Capabilities, DesiredState
from fleetcore.trust import TrustedSet, VerifiedRelease

log = logging.getLogger("edgefleet.director")
#: Encoded desired-state documents kept in memory (each a few kilobytes).
DOCUMENT_CACHE_ENTRIES = 4096
#: Verified release manifests kept in memory (one per release being assigned).
VERIFIED_CACHE_ENTRIES = 8
#: How long the director signing keys read from disk are reused, seconds.
SIGNERS_CACHE_S = 5.0
DIRECTOR = "director"

Listener = Callable[[str], None]


@dataclass(frozen=True)
class _Verified:
    """A manifest verified under a root: never handed out, only copied."""

    trusted: TrustedSet  # the state after verify_release
    release: VerifiedRelease
    valid_until: datetime  # the earlier of the root's and the manifest's expiry


class Director:
    def __init__(
        self,
        store: Store,
        releases: ReleaseService,
        settings: Settings,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.releases = releases
        self.settings = settings
        self.clock = clock
        self.listeners: list[Listener] = []
        self._documents: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._verified: OrderedDict[tuple[bytes, bytes], _Verified] = OrderedDict()
        self._signers: tuple[bytes, float, list[PrivateKey]] | None = None
        self._lock = threading.Lock()

    @property
    def lifetime(self) -> timedelta:
        return timedelta(days=self.settings.assignment_expires_days)

    # -- commands ------------------------------------------------------------------

    def assign(
        self,
        device_id: str,
        model: str,
        actor: str,
        *,
        version: str | None = None,
        release: int | None = None,
    ) -> DeviceAssignmentRecord:
        """Sign and store the next assignment of ``device_id`` to a release of ``model``."""
        if (version is None) == (release is None):
            raise InvalidInputError("name the release by its version or by its counter, not both")
        device = self._device(device_id)
        record = (
            self.releases.for_version(model, version)
            if version is not None
            else self.releases.get(model, release or 0)
        )
        now = self.clock().replace(microsecond=0)
        manifest = self._assignable(record, now)
        reasons = incompatibilities(Capabilities.from_dict(device.capabilities), manifest)
        if reasons:
            raise InvalidInputError(
                f"device {device_id} cannot run {model} release {record.counter}: "
                + "; ".join(reasons)
            )
        with self.store.transaction() as tx:
            signed = self._sign(tx, device_id, record, manifest, now, actor)
        self._changed(device_id)
        return signed

    def prepare(
        self, model: str, release: int, now: datetime
    ) -> tuple[ReleaseRecord, ReleaseManifest]:
        """The release and its manifest, if it can be assigned now (else StateError)."""
        record = self.releases.get(model, release)
        return record, self._assignable(record, now)

    def assign_in(
        self,
        tx: Store,
        device: DeviceRecord,
        record: ReleaseRecord,
        manifest: ReleaseManifest,
        now: datetime,
        actor: str,
        *,
        revoked: list[str] | None = None,
    ) -> DeviceAssignmentRecord:
        """Sign and store one assignment inside the caller's transaction.

        For callers that assign many devices at once (rollouts, reverts): the
        caller checked the release with :meth:`prepare`, and calls
        :meth:`notify` after its transaction commits. ``revoked`` is the
        model's revoked hashes as :meth:`revoked_in` read them in this
        transaction, to read them once per batch rather than once per device.
        """
        reasons = incompatibilities(Capabilities.from_dict(device.capabilities), manifest)
        if reasons:
            raise InvalidInputError(
                f"device {device.id} cannot run {record.model} release {record.counter}: "
                + "; ".join(reasons)
            )
        return self._sign(tx, device.id, record, manifest, now, actor, revoked=revoked)

    @staticmethod
    def revoked_in(tx: Store, model: str) -> list[str]:
        """Every hash revoked for ``model``, read in the caller's transaction."""
        return sorted({r.sha256 for r in tx.list_revocations(model)})

    def notify(self, device_ids: list[str]) -> None:
        """Tell the listeners that these devices' desired states changed."""
        for device_id in device_ids:
            self._changed(device_id)

    def renew_due(self) -> list[DeviceAssignmentRecord]:
        """Re-sign assignments with less than half their lifetime left; return the new ones."""
        now = self.clock().replace(microsecond=0)
        renewed = []
        for old in self.store.assignments_expiring(now + self.lifetime / 2):
            record = self.store.get_release(old.model, old.release)
            try:
                if record is None:
                    raise NotFoundError(f"release {old.release} of {old.model} is gone")
                manifest = self._assignable(record, now)
                if min(now + self.lifetime, manifest.expires) <= old.expires_at:
                    continue  # the manifest's expiry caps it: nothing to gain
                with self.store.transaction() as tx:
                    new = self._sign(
                        tx, old.device_id, record, manifest, now, DIRECTOR, expect=old.sequence
                    )
            except (NotFoundError, StateError, SigningError) as exc:
                log.info("assignment %d of %s not renewed: %s", old.sequence, old.device_id, exc)
                continue
            renewed.append(new)
            self._changed(old.device_id)
        return renewed

    # -- queries -------------------------------------------------------------------

    def desired(self, device_id: str) -> tuple[int, bytes] | None:
        """The device's desired state (sequence, document), or ``None`` before any assignment."""
        latest = self.store.latest_assignment(device_id)
        return None if latest is None else (latest.sequence, self.document(latest))

    def document(self, assignment: DeviceAssignmentRecord) -> bytes:
        key = (assignment.device_id, assignment.sequence)
        cached = self._documents.get(key)
        if cached is not None:
            self._documents.move_to_end(key)
            return cached
        manifest, _ = self.releases.manifest(assignment.model, assignment.release)
        document = DesiredState(assignment.envelope, manifest).encode()
        self._documents[key] = document
        if len(self._documents) > DOCUMENT_CACHE_ENTRIES:
            self._documents.popitem(last=False)
        return document

    # -- helpers --------------------------------------------------------------------

    def _device(self, device_id: str) -> DeviceRecord:
        device = self.store.get_device(device_id)
        if device is None:
            raise NotFoundError(f"no device {device_id}")
        if not device.active:
            raise StateError(f"device {device_id} was decommissioned")
        return device

    @staticmethod
    def _assignable(record: ReleaseRecord, now: datetime) -> ReleaseManifest:
        name = f"{record.model} release {record.counter}"
        if record.state is ReleaseState.PENDING:
            raise StateError(f"{name} is pending: it still needs its offline signatures")
        if record.state is ReleaseState.REVOKED:
            raise StateError(f"{name} is revoked ({record.revoke_reason or 'no reason given'})")
        manifest = ReleaseManifest.from_dict(Envelope.from_bytes(record.manifest).signed)
        if manifest.expires <= now:
            raise StateError(f"{name} expired at {format_time(manifest.expires)}")
        return manifest

    def _sign(
        self,
        tx: Store,
        device_id: str,
        record: ReleaseRecord,
        manifest: ReleaseManifest,
        now: datetime,
        actor: str,
        *,
        expect: int | None = None,
        revoked: list[str] | None = None,
    ) -> DeviceAssignmentRecord:
        sequence = tx.next_assignment_sequence(device_id, expect_current=expect)
        if revoked is None:
            revoked = self.revoked_in(tx, manifest.model)
        if manifest.artifact.sha256 in revoked:
            raise StateError(f"{manifest.model} release {manifest.release}'s artifact is revoked")
        root = self.releases.keys.root_bytes()
        trusted, verified = self._verified_release(root, record.manifest, now)
        envelope = Envelope(
            Assignment(
                device=device_id,
                sequence=sequence,
                issued=now,
                expires=min(now + self.lifetime, manifest.expires),
                model=manifest.model,
                release=manifest.release,
                manifest_sha256=verified.digest,
                artifact=manifest.artifact,
                format=manifest.format,
                compatibility=manifest.compatibility,
                revoked=tuple(revoked),
            ).to_dict()
        )
        for key in self._director_signers(root):
            envelope.sign(key)
        signed = envelope.to_bytes()
        self._verify(device_id, trusted, verified, signed, now)
        stored = tx.add_assignment(
            DeviceAssignmentRecord(
                device_id=device_id,
                sequence=sequence,
                model=manifest.model,
                release=manifest.release,
                manifest_sha256=str(envelope.signed["manifest_sha256"]),
                artifact_sha256=manifest.artifact.sha256,
                envelope=signed,
                issued_at=now,
                expires_at=min(now + self.lifetime, manifest.expires),
                created_by=actor,
            )
        )
        change = {
            "model": manifest.model,
            "release": manifest.release,
            "sequence": sequence,
            "expires": format_time(stored.expires_at),
            "renewal_of": expect,
        }
        audit(tx, actor, "device.assign", "device", device_id, change, now)
        return stored

    def _verified_release(
        self, root: bytes, manifest: bytes, now: datetime
    ) -> tuple[TrustedSet, VerifiedRelease]:
        """The manifest verified under ``root``: a private copy of the trust state after it.

        Raises:
            SigningError: a device would refuse the manifest.
        """
        key = (root, manifest)
        with self._lock:
            cached = self._verified.get(key)
        if cached is None or now >= cached.valid_until:
            try:
                trusted = TrustedSet(root)
                release = trusted.verify_release(manifest, now)
            except EdgefleetError as exc:
                raise SigningError(
                    f"the signed assignment does not verify: {exc.one_line()}"
                ) from exc
            until = min(trusted.root.expires, release.manifest.expires)
            cached = _Verified(trusted, release, until)
            with self._lock:
                self._verified[key] = cached
                if len(self._verified) > VERIFIED_CACHE_ENTRIES:
                    self._verified.popitem(last=False)
        trusted = copy.copy(cached.trusted)
        trusted.state = copy.deepcopy(cached.trusted.state)
        return trusted, cached.release

    def _director_signers(self, root: bytes) -> list[PrivateKey]:
        held = self._signers
        clock = time.monotonic()
        if held is not None and held[0] == root and clock < held[1]:
            return held[2]
        signers = self.releases.keys.director_signers()
        self._signers = (root, clock + SIGNERS_CACHE_S, signers)
        return signers

    @staticmethod
    def _verify(
        device_id: str,
        trusted: TrustedSet,
        release: VerifiedRelease,
        assignment: bytes,
        now: datetime,
    ) -> None:
        """Refuse to store an assignment the device would refuse."""
        trusted.device_id = device_id
        try:
            trusted.verify_assignment(assignment, release, now)
        except EdgefleetError as exc:
            raise SigningError(f"the signed assignment does not verify: {exc.one_line()}") from exc

    def _changed(self, device_id: str) -> None:
        for listener in self.listeners:
            try:
                listener(device_id)
            except Exception:  # a listener's failure must not undo a committed assignment
                log.exception("desired-state listener failed for %s", device_id)


__all__ = ["DIRECTOR", "Director"]
