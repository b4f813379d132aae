"""Turning a desired-state message into a verified update, or a refusal.

Theory of operation. :class:`TrustGate` owns the pinned root on disk and asks
:class:`~fleetcore.trust.TrustedSet` for every decision. :meth:`verify` checks
the release manifest first (its signatures by the release role, expiry,
floor, revocations), then the assignment against it (director signature,
this device, a sequence above the last accepted one, exact match with the
manifest, no downgrade). It works on a *copy* of the trust state and returns
the new state with the verdict; the updater persists that state in the same
transaction as the journal entry that acts on it, so the state on disk never
runs ahead of what the device did.

Root rotation: when verification fails for a reason a newer root could cure
(a signature threshold not met, or the root in use expired), the gate walks
the chain once: ``GET /v1/metadata/root/{N+1}`` until 404, each version
verified by a threshold of the previous root *and* of itself
(:meth:`TrustedSet.update_root`), each accepted root saved atomically before
the next is fetched; then it verifies again. A server that cannot be reached
during the walk raises :class:`~agent.errors.TransportError`, which the
updater treats as "try later", not as a refusal.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from agent.identity import load_root, save_root
from fleetcore.errors import ExpiredMetadataError, SignatureError, TrustMissingError
from fleetcore.metadata import Assignment
from fleetcore.protocol import DesiredState
from fleetcore.trust import TrustedSet, TrustState, VerifiedRelease

log = logging.getLogger(__name__)
#: Root versions fetched in one walk at most; a chain longer than this is
#: finished on the next walk.
MAX_ROOT_STEPS = 64

RootFetcher = Callable[[int], "bytes | None"]


@dataclass(frozen=True)
class Verdict:
    release: VerifiedRelease
    assignment: Assignment
    state: TrustState


class TrustGate:
    """Verifies desired states for one device against its pinned root."""

    def __init__(self, data_dir: Path, device_id: str, fetch_root: RootFetcher | None) -> None:
        self.data_dir = data_dir
        self.device_id = device_id
        self._fetch_root = fetch_root
        root = load_root(data_dir)
        # Fail closed: TrustedSet refuses a missing or self-inconsistent root.
        self._root = TrustedSet(root, device_id=device_id).root
        self._root_bytes = root or b""

    @property
    def root_version(self) -> int:
        return self._root.version

    def _trusted_set(self, state: TrustState) -> TrustedSet:
        return TrustedSet(self._root_bytes, device_id=self.device_id, state=state)

    def verify(self, desired: DesiredState, state: TrustState, now: datetime) -> Verdict:
        """Verify ``desired``; raise an EdgefleetError naming the failed check."""
        try:
            return self._verify_once(desired, state, now)
        except (SignatureError, ExpiredMetadataError) as exc:
            if not self.walk_root_chain(state):
                raise
            log.info("root rotated to v%d; verifying again after: %s", self.root_version, exc)
            return self._verify_once(desired, state, now)

    def _verify_once(self, desired: DesiredState, state: TrustState, now: datetime) -> Verdict:
        trusted = self._trusted_set(copy.deepcopy(state))
        release = trusted.verify_release(desired.manifest, now)
        assignment = trusted.verify_assignment(desired.assignment, release, now)
        return Verdict(release, assignment, trusted.state)

    def record_commit(self, state: TrustState, model: str, release: int) -> TrustState:
        """A copy of ``state`` that remembers this device committed ``release``."""
        trusted = self._trusted_set(copy.deepcopy(state))
        trusted.record_commit(model, release)
        return trusted.state

    def walk_root_chain(self, state: TrustState) -> bool:
        """Fetch and accept newer roots; True when the root in use changed.

        Raises:
            TransportError: the server could not be asked.
            EdgefleetError: the server offered a root that does not verify.
        """
        if self._fetch_root is None:
            return False
        trusted = self._trusted_set(copy.deepcopy(state))
        start = trusted.root.version
        for _ in range(MAX_ROOT_STEPS):
            data = self._fetch_root(trusted.root.version + 1)
            if data is None:
                break
            trusted.update_root(data)
            save_root(self.data_dir, data)
            self._root, self._root_bytes = trusted.root, data
            log.info("accepted root v%d", trusted.root.version)
        return trusted.root.version != start


def check_pinned_root(data_dir: Path) -> None:
    """Raise TrustMissingError unless a self-consistent root is pinned."""
    root = load_root(data_dir)
    if root is None:
        raise TrustMissingError(f"no trusted root under {data_dir}: enroll again")
    TrustedSet(root)


__all__ = ["MAX_ROOT_STEPS", "TrustGate", "Verdict", "check_pinned_root"]
