"""The trusted metadata set: every trust decision a device makes, without I/O.

Theory of operation (after python-tuf's ``TrustedMetadataSet`` and Uptane):
a :class:`TrustedSet` starts from a pinned root and a persisted
:class:`TrustState`. Callers hand it the bytes they fetched and the current
time; it verifies and either returns typed metadata or raises an
:class:`~fleetcore.errors.EdgefleetError` and leaves its state unchanged. It
reads no clock, file or socket, so every rule below is testable with a table.

Rules, in the order they are checked:

* root: version exactly N+1, signed by a threshold of root N *and* of itself;
* every document: a threshold of its role's keys, counted by distinct key id;
  unknown key types and hash algorithms are refused when parsed;
* expiry against ``max(now, newest signed time seen)``, so setting a clock back
  cannot revive expired metadata; the root in use must be unexpired too;
* release: counter not below the model's floor (the highest floor any verified
  manifest signed), hash not revoked;
* assignment: this device's id, a sequence above the last accepted one, an exact
  match with the verified release (model, counter, manifest digest, length,
  hash, format, compatibility), floor and revocations again, and no downgrade to
  a release this device never committed.

State only moves forward: floors rise, revocations accumulate, the sequence
and the newest signed time increase. The agent persists :class:`TrustState`
after each accepted document (``to_dict``/``from_dict``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from fleetcore import canonical
from fleetcore.envelope import Envelope
from fleetcore.errors import (
    BelowFloorError,
    DowngradeError,
    ExpiredMetadataError,
    MetadataError,
    MismatchError,
    RevokedError,
    RollbackError,
    TrustMissingError,
)
from fleetcore.metadata import NAME, Assignment, ReleaseManifest, Root, format_time, parse_time
from fleetcore.metadata._fields import SHA256_HEX, Fields

_T = TypeVar("_T", Root, ReleaseManifest, Assignment)


@dataclass
class TrustState:
    """What a device remembers between verifications; it only moves forward."""

    newest_signed_time: datetime | None = None
    floors: dict[str, int] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    assignment_sequence: int = 0
    committed: dict[str, set[int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        newest = self.newest_signed_time
        return {
            "newest_signed_time": None if newest is None else format_time(newest),
            "floors": dict(sorted(self.floors.items())),
            "revoked": sorted(self.revoked),
            "assignment_sequence": self.assignment_sequence,
            "committed": {m: sorted(c) for m, c in sorted(self.committed.items())},
        }

    @classmethod
    def from_dict(cls, obj: Any) -> TrustState:
        f = Fields(obj, "trust state")
        newest = f.optional_string("newest_signed_time")
        floors = f.required_object("floors")
        committed = f.required_object("committed")
        if not all(NAME.fullmatch(m) and _is_count(v) for m, v in floors.items()):
            raise MetadataError("trust state floors must map model names to counters")
        if not all(
            NAME.fullmatch(m) and isinstance(c, list) and all(_is_count(r) for r in c)
            for m, c in committed.items()
        ):
            raise MetadataError("trust state committed must map model names to counter lists")
        return cls(
            newest_signed_time=None if newest is None else parse_time(newest, "newest_signed_time"),
            floors=dict(floors),
            revoked=set(f.string_list("revoked", pattern=SHA256_HEX)),
            assignment_sequence=f.integer("assignment_sequence"),
            committed={m: set(c) for m, c in committed.items()},
        )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class VerifiedRelease:
    """A release manifest whose signatures and rules were checked, with its digest."""

    manifest: ReleaseManifest
    digest: str  # sha256 of the canonical ``signed`` bytes


def manifest_digest(signed: dict[str, Any]) -> str:
    """The digest an assignment uses to name a release manifest."""
    return hashlib.sha256(canonical.encode(signed)).hexdigest()


class TrustedSet:
    """Verifies root, release and assignment metadata for one device."""

    def __init__(
        self,
        trusted_root: bytes | None,
        *,
        device_id: str | None = None,
        state: TrustState | None = None,
    ) -> None:
        if not trusted_root:
            raise TrustMissingError("no trusted root metadata: refusing to verify anything")
        envelope = Envelope.from_bytes(trusted_root)
        root = self._parse(envelope, Root)
        # A pinned root must still be internally consistent: signed by itself.
        self._require(envelope, root, "root", by=f"root v{root.version}")
        self.root = root
        self.device_id = device_id
        self.state = state if state is not None else TrustState()

    # -- helpers -------------------------------------------------------------

    @staticmethod
    def _expect(envelope: Envelope, cls: type[_T]) -> None:
        if envelope.metadata_type != cls.type:
            raise MetadataError(f"expected {cls.type} metadata, got {envelope.metadata_type}")

    @classmethod
    def _parse(cls, envelope: Envelope, kind: type[_T]) -> _T:
        cls._expect(envelope, kind)
        return kind.from_dict(envelope.signed)

    @staticmethod
    def _require(envelope: Envelope, root: Root, role: str, *, by: str = "") -> None:
        spec = root.role(role)
        envelope.require_threshold(role, spec.keyids, spec.threshold, root.keys, by=by)

    def reference_time(self, now: datetime) -> datetime:
        """The time expiry is judged against: never earlier than a signed time seen."""
        newest = self.state.newest_signed_time
        return now if newest is None or now >= newest else newest

    def _check_expiry(self, what: str, expires: datetime, now: datetime) -> None:
        reference = self.reference_time(now)
        if expires <= reference:
            raise ExpiredMetadataError(
                f"{what} expired at {format_time(expires)} "
                f"(reference time {format_time(reference)})"
            )

    def _check_root_current(self, now: datetime) -> None:
        self._check_expiry(f"root v{self.root.version}", self.root.expires, now)

    def _saw(self, issued: datetime) -> None:
        newest = self.state.newest_signed_time
        if newest is None or issued > newest:
            self.state.newest_signed_time = issued

    def _check_floor_and_revocation(
        self, manifest: ReleaseManifest, extra_revoked: Iterable[str] = ()
    ) -> None:
        floor = max(self.state.floors.get(manifest.model, 0), manifest.floor)
        if manifest.release < floor:
            raise BelowFloorError(
                f"{manifest.model} release {manifest.release} is below the floor {floor}"
            )
        revoked = self.state.revoked.union(manifest.revoked, extra_revoked)
        if manifest.artifact.sha256 in revoked:
            raise RevokedError(
                f"{manifest.model} release {manifest.release} artifact "
                f"{manifest.artifact.sha256[:16]}… is revoked"
            )

    # -- root ------------------------------------------------------------------

    def update_root(self, data: bytes) -> Root:
        """Accept root version N+1, signed by thresholds of root N and of itself.

        Intermediate roots may be expired (a device may walk a long chain); the
        root finally in use is checked for expiry whenever it verifies anything.
        """
        envelope = Envelope.from_bytes(data)
        current = self.root.version
        self._expect(envelope, Root)
        self._require(envelope, self.root, "root", by=f"trusted root v{current}")
        new = Root.from_dict(envelope.signed)
        self._require(envelope, new, "root", by=f"new root v{new.version}")
        if new.version != current + 1:
            kind = "is not newer than" if new.version <= current else "skips past the version after"
            raise RollbackError(
                f"root v{new.version} {kind} trusted root v{current}", check="root-version"
            )
        self.root = new
        self._saw(new.issued)
        return new

    # -- release -------------------------------------------------------------------

    def verify_release(self, data: bytes, now: datetime) -> VerifiedRelease:
        """Verify a signed release manifest and raise the model's floor if it signs one."""
        self._check_root_current(now)
        envelope = Envelope.from_bytes(data)
        # Signatures first: typed parsing only ever sees authenticated content.
        self._expect(envelope, ReleaseManifest)
        self._require(envelope, self.root, "release")
        manifest = ReleaseManifest.from_dict(envelope.signed)
        self._check_expiry(f"{manifest.model} release {manifest.release}", manifest.expires, now)
        self._check_floor_and_revocation(manifest)
        # Accepted: tighten state.
        floors = self.state.floors
        floors[manifest.model] = max(floors.get(manifest.model, 0), manifest.floor)
        self.state.revoked.update(manifest.revoked)
        self._saw(manifest.issued)
        return VerifiedRelease(manifest, manifest_digest(envelope.signed))

    # -- assignment ------------------------------------------------------------------

    def verify_assignment(self, data: bytes, release: VerifiedRelease, now: datetime) -> Assignment:
        """Verify a director assignment against the release it names."""
        if self.device_id is None:
            raise TrustMissingError("this device has no id yet: enroll before installing")
        self._check_root_current(now)
        envelope = Envelope.from_bytes(data)
        self._expect(envelope, Assignment)
        self._require(envelope, self.root, "director")
        assignment = Assignment.from_dict(envelope.signed)
        self._check_expiry(f"assignment {assignment.sequence}", assignment.expires, now)
        if assignment.device != self.device_id:
            raise MismatchError(
                f"assignment is for device {assignment.device!r}, this is {self.device_id!r}"
            )
        if assignment.sequence <= self.state.assignment_sequence:
            raise RollbackError(
                f"assignment sequence {assignment.sequence} is not above the last accepted "
                f"{self.state.assignment_sequence}",
                check="sequence",
            )
        _match(assignment, release)
        manifest = release.manifest
        self._check_floor_and_revocation(manifest, assignment.revoked)
        committed = self.state.committed.get(manifest.model, set())
        if committed and manifest.release < max(committed) and manifest.release not in committed:
            raise DowngradeError(
                f"{manifest.model} release {manifest.release} is older than committed release "
                f"{max(committed)} and was never committed on this device"
            )
        self.state.assignment_sequence = assignment.sequence
        self.state.revoked.update(assignment.revoked)
        self._saw(assignment.issued)
        return assignment

    def record_commit(self, model: str, release: int) -> None:
        """Remember that this device committed ``release`` of ``model``."""
        self.state.committed.setdefault(model, set()).add(release)


def _match(assignment: Assignment, release: VerifiedRelease) -> None:
    manifest = release.manifest
    pairs: list[tuple[str, object, object]] = [
        ("model", assignment.model, manifest.model),
        ("release counter", assignment.release, manifest.release),
        ("manifest digest", assignment.manifest_sha256, release.digest),
        ("artifact length", assignment.artifact.length, manifest.artifact.length),
        ("artifact sha256", assignment.artifact.sha256, manifest.artifact.sha256),
        ("format", assignment.format, manifest.format),
        ("compatibility", assignment.compatibility.to_dict(), manifest.compatibility.to_dict()),
    ]
    for name, got, want in pairs:
        if got != want:
            raise MismatchError(f"assignment {name} does not match the release manifest")


__all__ = ["TrustState", "TrustedSet", "VerifiedRelease", "manifest_digest"]
