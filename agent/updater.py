"""The update worker: verified desired states in, one update at a time, resumable.

Theory of operation. Transports offer raw desired-state bytes to the
:class:`~agent.mailbox.Mailbox`; one worker thread (:meth:`Updater.run`)
takes them. :meth:`consider` drops exact duplicates of the current
assignment, asks the :class:`~agent.trustgate.TrustGate` for a verdict, and
either refuses (``rejected``, reported once per document) or starts an update
(``notified``). :meth:`drive` then performs the current state's action and
moves along :mod:`agent.workflow`'s table until the update rests.

Every transition goes through :class:`~agent.recorder.Recorder`: next state
from the table, then the journal, the trust state and the status report in
one transaction (:mod:`agent.statedb`), then the test pause hook, and only
then the action.
So after ``kill -9`` anywhere, :meth:`resume` finds the last state entered and
redoes its idempotent action (see :mod:`agent.journal`).

Rules the worker keeps:

* failures before activation end in ``failed`` and leave the active model
  alone; failures after it end in ``reverted``: the pointer goes back to the
  committed release and the host reloads it;
* a committed release is never reverted by a restart; unclean restarts while
  the new model loads or is on probation are counted, and more than
  ``crash_loop_boots`` of them revert it (reason ``crash-loop``);
* a newer verified assignment supersedes an update in progress at the next
  step boundary (a download checks between chunks), through ``failed`` or
  ``reverted`` with reason ``superseded``; never two updates at once;
* commit records the release in the trust state, keeps the previous
  committed blob and garbage-collects every other one.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent import steps
from agent._pause import pause_if_requested
from agent.config import UpdateConfig
from agent.download import Downloader
from agent.errors import (
    AgentError,
    TransportError,
)
from agent.host import Host
from agent.installer import Installer, one_line
from agent.journal import Journal, Release, Update
from agent.mailbox import Mailbox
from agent.outbox import Outbox
from agent.recorder import Recorder
from agent.slots import (
    read_active,
)
from agent.statedb import StateDB
from agent.trustgate import TrustGate, Verdict
from agent.workflow import ACTIVATED, IN_PROGRESS, RESTING, Event
from fleetcore.envelope import Envelope
from fleetcore.errors import EdgefleetError, ProtocolError
from fleetcore.protocol import DesiredState
from fleetcore.protocol import UpdateState as S

log = logging.getLogger(__name__)
E = Event
#: Wait before retrying a desired state that could not be checked (server unreachable).
RETRY_LATER_S = 30.0
#: Refused documents remembered, so each is reported once however often it is redelivered.
REMEMBER_REJECTED = 16


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Updater:
    """Runs the update workflow of one device."""

    def __init__(
        self,
        *,
        data_dir: Path,
        device_id: str,
        config: UpdateConfig,
        db: StateDB,
        outbox: Outbox,
        gate: TrustGate,
        host: Host,
        downloader: Downloader,
        formats: set[str] | None = None,
        clock: Callable[[], datetime] = utcnow,
        on_enter: Callable[[S], None] = pause_if_requested,
        threads: int = 1,
    ) -> None:
        self.data_dir, self.device_id, self.config = data_dir, device_id, config
        self.db, self.outbox, self.gate, self.host = db, outbox, gate, host
        self.clock = clock
        self.recorder = Recorder(
            data_dir=data_dir,
            device_id=device_id,
            db=db,
            outbox=outbox,
            clock=clock,
            on_enter=on_enter,
        )
        self.mailbox = Mailbox()
        self._stop = threading.Event()
        self._retry: tuple[float, bytes] | None = None
        self.installer = Installer(
            data_dir=data_dir,
            config=config,
            recorder=self.recorder,
            gate=gate,
            host=host,
            downloader=downloader,
            formats=steps.supported_formats() if formats is None else formats,
            mailbox=self.mailbox,
            stop=self._stop,
            threads=threads,
        )

    # -- the worker ------------------------------------------------------------------

    def offer(self, document: bytes) -> None:
        """Hand a desired-state document to the worker (any thread)."""
        self.mailbox.offer(document)

    def stop(self) -> None:
        self._stop.set()
        self.mailbox.interrupt()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Worker thread body: resume, then handle desired states until stopped."""
        try:
            self._guard(self.resume)
            while not self._stop.is_set():
                self._guard(self.drive)
                document = self._next_document()
                if document is not None:
                    self._guard(functools.partial(self.consider, document))
        finally:
            if self._stop.is_set():
                self._save(clean_stop=True)

    def _guard(self, work: Callable[[], None]) -> None:
        try:
            work()
        except (AgentError, EdgefleetError, OSError) as exc:
            log.error("update worker: %s", one_line(exc))
            self.mailbox.sleep(5.0)
        except Exception:  # a bug must not silently end updates: log it, keep going
            log.exception("update worker: unexpected error")
            self.mailbox.sleep(5.0)

    def _next_document(self) -> bytes | None:
        document = self.mailbox.take(timeout_s=1.0)
        if document is None and self._retry is not None and time.monotonic() >= self._retry[0]:
            document, self._retry = self._retry[1], None
        return document

    @property
    def journal(self) -> Journal:
        return self.recorder.journal

    def _enter(self, event: Event, *, report: dict[str, Any] | None = None, **changes: Any) -> None:
        self.recorder.enter(event, report=report, **changes)

    def _save(self, **changes: Any) -> None:
        self.recorder.save(**changes)

    # -- desired states ----------------------------------------------------------------------

    def consider(self, document: bytes) -> None:
        """Verify a desired-state document and start, supersede, ignore or refuse."""
        digest = hashlib.sha256(document).hexdigest()
        try:
            desired = DesiredState.decode(document)
        except ProtocolError as exc:
            self._refuse(digest, None, exc)
            return
        current = self.journal.update
        if current is not None and desired.assignment == current.assignment:
            log.debug("duplicate desired state (assignment %d) ignored", current.sequence)
            return
        try:
            verdict = self.gate.verify(desired, self.journal.trust, self.clock())
        except TransportError as exc:
            log.warning("cannot check a desired state now (%s); retrying later", exc)
            self._retry = (time.monotonic() + RETRY_LATER_S, document)
            return
        except EdgefleetError as exc:
            self._refuse(digest, desired, exc)
            return
        self._accept(desired, verdict)

    def _refuse(self, digest: str, desired: DesiredState | None, exc: EdgefleetError) -> None:
        if digest in self.journal.rejected:
            log.info("desired state refused again (already reported): %s", exc.one_line())
            return
        log.warning("desired state refused: %s", exc.one_line())
        sequence = None
        if desired is not None:  # informational only: never acted upon
            sequence = _unverified_sequence(desired.assignment)
        report = {"target": None, "assignment_sequence": sequence}
        why = {"reason": exc.check, "message": one_line(exc)}
        rejected = (*self.journal.rejected, digest)[-REMEMBER_REJECTED:]
        if self.journal.state in RESTING:
            self._enter(E.REFUSED, report=report, rejected=rejected, **why)
            return
        # An update is running: report the refusal without disturbing it.
        self.recorder.announce(report={"state": S.REJECTED, **report, **why}, rejected=rejected)

    def _accept(self, desired: DesiredState, verdict: Verdict) -> None:
        # A document waiting to be re-checked is older than one just accepted:
        # checking it later could only produce a false "rejected".
        self._retry = None
        manifest = verdict.release.manifest
        update = Update(
            sequence=verdict.assignment.sequence,
            assignment=desired.assignment,
            manifest=desired.manifest,
            target=Release.from_manifest(manifest),
            started=self.clock(),
        )
        current = self.journal.update
        if self.journal.state in IN_PROGRESS and current is not None:
            if current.target == update.target:
                # The same release under a newer sequence: keep going.
                adopted = replace(current, sequence=update.sequence, assignment=update.assignment)
                self._save(update=replace(adopted, manifest=update.manifest), trust=verdict.state)
                return
            self.installer.end("superseded", f"superseded by assignment {update.sequence}")
        self._enter(E.ASSIGNED, update=update, trust=verdict.state)

    def drive(self) -> None:
        self.installer.drive(self.consider)

    # -- restart ---------------------------------------------------------------------------------

    def resume(self) -> None:
        """Pick up after a restart: count crash loops, serve the active model."""
        j = self.journal
        upd = j.update
        reverted = False
        if j.state in (S.SMOKE_TEST, *ACTIVATED) and upd is not None and not j.clean_stop:
            upd = replace(upd, boots=upd.boots + 1)
            self._save(update=upd)
            if upd.boots > self.config.crash_loop_boots:
                message = f"{upd.boots} unclean restarts in state {j.state.value}"
                self.installer.end("crash-loop", message)
                reverted = True
        if self.journal.clean_stop:
            self._save(clean_stop=False)
        upd = self.journal.update
        if not reverted and self.journal.state in RESTING and upd is not None and not upd.done:
            # Died between recording an outcome and carrying it out (a revert
            # moves the pointer back): finish first, so the model being
            # reverted is never loaded again; it may be what crashed us.
            self.installer.finish()
            reverted = self.journal.state == S.REVERTED
        active = read_active(self.data_dir)
        if active is not None and self.journal.state in RESTING and self.journal.committed is None:
            self._save(committed=Release.from_slot(active))  # adopted, e.g. after re-enrolling
        # Serve what the pointer says, unless that was just done or is the next step.
        if active is None or reverted or self.journal.state == S.ACTIVATING:
            return
        try:
            self.host.activate(active)
        except Exception as exc:
            if self.journal.state == S.PROBATION:
                self.installer.end(getattr(exc, "check", "runtime"), one_line(exc))
            else:
                log.error("cannot serve the active model %s: %s", active.sha256[:16], exc)


def _unverified_sequence(envelope: bytes) -> int | None:
    """The sequence a refused assignment claims, for the report only: never acted on."""
    try:
        raw = Envelope.from_bytes(envelope).signed.get("sequence")
    except EdgefleetError:
        return None
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1 else None


__all__ = ["RETRY_LATER_S", "Updater", "utcnow"]
