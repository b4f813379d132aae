"""The update journal: where the updater is, so a restart resumes exactly there.

Theory of operation. :class:`Journal` is everything the updater must not
forget: the workflow state, the update in progress (its verified assignment
and manifest bytes, download attempts, unclean boots, probation time already
observed), the committed and previous committed releases, and the
:class:`~fleetcore.trust.TrustState` (floors, revocations, the last accepted
assignment sequence, committed releases). It is stored as one JSON value in
the state database, written in the same transaction as the status report of a
transition (:meth:`JournalStore.save`).

Rule: the journal is saved *before* the updater acts on a state. Each state's
action is idempotent (download resumes from the partial file, verification
re-hashes, activation rewrites the pointer and reloads the host, commit and
revert rewrite what they own), so redoing the action of the saved state after
``kill -9`` at any instant converges on the same result.

The assignment and manifest were verified before they were first saved; on
resume they are re-parsed from our own journal, not re-verified (the
assignment sequence is already recorded as accepted, so verifying again would
refuse it as a replay).
"""

from __future__ import annotations

import base64
import sqlite3
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.errors import StateError
from agent.slots import Slot, blob_path
from agent.statedb import StateDB
from fleetcore.envelope import Envelope
from fleetcore.errors import EdgefleetError
from fleetcore.metadata import ReleaseManifest, format_time, parse_time
from fleetcore.protocol import Installed, UpdateState
from fleetcore.trust import TrustState

_KEY = "journal"


@dataclass(frozen=True)
class Release:
    """An installed release and its format: what a slot points at."""

    model: str
    release: int
    sha256: str
    format: str

    def installed(self) -> Installed:
        return Installed(self.model, self.release, self.sha256)

    def slot(self, data_dir: Path) -> Slot:
        return Slot(
            self.model, self.release, self.sha256, self.format, blob_path(data_dir, self.sha256)
        )

    @classmethod
    def from_slot(cls, slot: Slot) -> Release:
        return cls(slot.model, slot.release, slot.sha256, slot.format)

    @classmethod
    def from_manifest(cls, manifest: ReleaseManifest) -> Release:
        return cls(manifest.model, manifest.release, manifest.artifact.sha256, manifest.format)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "release": self.release,
            "sha256": self.sha256,
            "format": self.format,
        }

    @classmethod
    def from_dict(cls, obj: Any) -> Release:
        return cls(str(obj["model"]), int(obj["release"]), str(obj["sha256"]), str(obj["format"]))


def _opt_release(obj: Any) -> Release | None:
    return None if obj is None else Release.from_dict(obj)


@dataclass(frozen=True)
class Update:
    """One update, from a verified assignment to its outcome."""

    sequence: int
    assignment: bytes
    manifest: bytes
    target: Release
    started: datetime
    attempts: int = 0  # failed download attempts so far
    boots: int = 0  # unclean restarts while the new model was loading or on probation
    probation_observed_s: float = 0.0
    done: bool = False  # the outcome's actions (pointer, gc) are finished

    def parsed_manifest(self) -> ReleaseManifest:
        try:
            return ReleaseManifest.from_dict(Envelope.from_bytes(self.manifest).signed)
        except EdgefleetError as exc:
            raise StateError(f"journal holds an unreadable manifest: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "assignment": base64.b64encode(self.assignment).decode(),
            "manifest": base64.b64encode(self.manifest).decode(),
            "target": self.target.to_dict(),
            "started": format_time(self.started),
            "attempts": self.attempts,
            "boots": self.boots,
            "probation_observed_s": self.probation_observed_s,
            "done": self.done,
        }

    @classmethod
    def from_dict(cls, obj: Any) -> Update:
        return cls(
            sequence=int(obj["sequence"]),
            assignment=base64.b64decode(obj["assignment"]),
            manifest=base64.b64decode(obj["manifest"]),
            target=Release.from_dict(obj["target"]),
            started=parse_time(obj["started"], "journal started"),
            attempts=int(obj["attempts"]),
            boots=int(obj["boots"]),
            probation_observed_s=float(obj["probation_observed_s"]),
            done=bool(obj["done"]),
        )


@dataclass(frozen=True)
class Journal:
    state: UpdateState = UpdateState.IDLE
    update: Update | None = None
    reason: str | None = None
    message: str | None = None
    committed: Release | None = None
    previous: Release | None = None
    trust: TrustState = field(default_factory=TrustState)
    #: sha256 of the last desired-state documents refused, so a retained stale
    #: message redelivered on every reconnect is reported once.
    rejected: tuple[str, ...] = ()
    #: The agent stopped cleanly (SIGTERM): the next start is not a crash.
    clean_stop: bool = False

    def evolve(self, **changes: Any) -> Journal:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "update": None if self.update is None else self.update.to_dict(),
            "reason": self.reason,
            "message": self.message,
            "committed": None if self.committed is None else self.committed.to_dict(),
            "previous": None if self.previous is None else self.previous.to_dict(),
            "trust": self.trust.to_dict(),
            "rejected": list(self.rejected),
            "clean_stop": self.clean_stop,
        }

    @classmethod
    def from_dict(cls, obj: Any) -> Journal:
        try:
            update = obj["update"]
            return cls(
                state=UpdateState(obj["state"]),
                update=None if update is None else Update.from_dict(update),
                reason=obj.get("reason"),
                message=obj.get("message"),
                committed=_opt_release(obj.get("committed")),
                previous=_opt_release(obj.get("previous")),
                trust=TrustState.from_dict(obj["trust"]),
                rejected=tuple(str(d) for d in obj.get("rejected", [])),
                clean_stop=bool(obj.get("clean_stop", False)),
            )
        except (KeyError, TypeError, ValueError, EdgefleetError) as exc:
            raise StateError(f"the update journal is corrupt: {exc!r}") from exc


class JournalStore:
    """Loads and saves the journal in the state database."""

    def __init__(self, db: StateDB) -> None:
        self.db = db

    def load(self) -> Journal:
        obj = self.db.get(_KEY)
        return Journal() if obj is None else Journal.from_dict(obj)

    def save(self, journal: Journal, conn: sqlite3.Connection | None = None) -> None:
        self.db.put(_KEY, journal.to_dict(), conn)


__all__ = ["Journal", "JournalStore", "Release", "Update"]
