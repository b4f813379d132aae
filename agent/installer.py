"""Carrying out one update: the action of every workflow state.

Theory of operation. :meth:`Installer.drive` performs the action of the
journal's current state and moves on, until the update rests. Each action is
idempotent, so redoing the saved state after a crash converges:

=============  ===============================================================
state          action (then the event it ends with)
=============  ===============================================================
notified       check a runtime exists for the format; the release already
               committed and served commits at once (ALREADY_ACTIVE), else FETCH
downloading    resume ``downloads/<sha>.part`` unless the blob is stored (DOWNLOADED)
verifying      hash the partial file (or the stored blob) against the signed
               length and digest, move it into the store (VERIFIED); a missing
               or corrupt file goes back to downloading (REFETCH)
staged         nothing left but testing (TEST)
smoke_test     load the blob in the real runtime, reproduce the signed smoke
               vectors (PASSED)
activating     switch the slot pointer, make the host load it (ACTIVATED)
probation      every ``probation_check_s`` judge the host's health; after
               ``probation_s`` observed (HEALTHY) commit
=============  ===============================================================

Any exception from an action ends the update with its ``check`` as reason:
``failed`` before activation (the active model was never touched),
``reverted`` after it (:meth:`Installer.finish` points the slot back at the
committed release and the host reloads it). Disk-full errors delete the
partial download first. :meth:`Installer.finish` is the outcome's action
(revert the pointer, collect garbage, keeping the active, committed and
previous committed blobs) and is redone on restart until it is marked done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent import steps
from agent.config import UpdateConfig
from agent.download import Downloader
from agent.errors import (
    AgentError,
    DiskFullError,
    InterruptError,
    ShutdownError,
    StateError,
    SupersededError,
    is_disk_full,
)
from agent.host import Host, judge
from agent.journal import Journal, Update
from agent.mailbox import Mailbox
from agent.recorder import Recorder
from agent.slots import (
    blob_path,
    collect_garbage,
    install_blob,
    part_path,
    read_active,
    write_active,
)
from agent.trustgate import TrustGate
from agent.workflow import ACTIVATED, IN_PROGRESS, Event
from fleetcore.errors import ArtifactError, EdgefleetError, ProtocolError
from fleetcore.protocol import MAX_REASON_CHARS, DesiredState
from fleetcore.protocol import UpdateState as S

log = logging.getLogger("agent.updater")
E = Event


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:MAX_REASON_CHARS] or exc.__class__.__name__


class Installer:
    """Performs the workflow's actions for the update in the journal."""

    def __init__(
        self,
        *,
        data_dir: Path,
        config: UpdateConfig,
        recorder: Recorder,
        gate: TrustGate,
        host: Host,
        downloader: Downloader,
        formats: set[str],
        mailbox: Mailbox,
        stop: threading.Event,
        threads: int = 1,
    ) -> None:
        self.data_dir, self.config, self.recorder, self.gate = data_dir, config, recorder, gate
        self.host, self.downloader, self.formats = host, downloader, formats
        self.mailbox, self._stop, self.threads = mailbox, stop, threads

    @property
    def journal(self) -> Journal:
        return self.recorder.journal

    def _enter(self, event: Event, **changes: Any) -> None:
        self.recorder.enter(event, **changes)

    def _save(self, **changes: Any) -> None:
        self.recorder.save(**changes)

    def drive(self, consider: Callable[[bytes], None]) -> None:
        """Act on the current state until the update rests, is interrupted or we stop.

        A desired state arriving meanwhile is handed to ``consider`` between steps.
        """
        while self.journal.state in IN_PROGRESS and not self._stop.is_set():
            if self.mailbox.pending:
                document = self.mailbox.take()
                if document is not None:
                    consider(document)
                continue
            try:
                self._step()
            except InterruptError:
                continue
        upd = self.journal.update
        if self.journal.state not in IN_PROGRESS and upd is not None and not upd.done:
            self.finish()

    def _interrupted(self) -> bool:
        """Stop the step at hand: shutting down, or a different desired state waits.

        A redelivery of the update in progress (a retained message on reconnect,
        the HTTP reconciliation after it) is dropped here instead: restarting a
        download for it would throw away the bytes already received.
        """
        if self._stop.is_set():
            return True
        upd = self.journal.update
        if upd is None:
            return self.mailbox.pending
        return self.mailbox.discard_if(lambda document: _same_assignment(document, upd.assignment))

    def _step(self) -> None:
        upd = self.journal.update
        if upd is None:
            raise StateError(f"journal is in {self.journal.state.value} without an update")
        action = {
            S.NOTIFIED: self._notified,
            S.DOWNLOADING: self._downloading,
            S.VERIFYING: self._verifying,
            S.STAGED: lambda u: self._enter(E.TEST),
            S.SMOKE_TEST: self._smoke_test,
            S.ACTIVATING: self._activating,
            S.PROBATION: self._probation,
        }[self.journal.state]
        try:
            action(upd)
        except InterruptError:
            raise
        except Exception as exc:  # every failure ends the update, never the worker
            if isinstance(exc, OSError) and is_disk_full(exc):
                exc = DiskFullError(f"no space left: {exc.strerror}")
            if isinstance(exc, DiskFullError):
                part_path(self.data_dir, upd.target.sha256).unlink(missing_ok=True)
            if not isinstance(exc, (AgentError, EdgefleetError)):
                log.exception("unexpected error in state %s", self.journal.state.value)
            self.end(getattr(exc, "check", "internal"), one_line(exc))

    def end(self, reason: str, message: str) -> None:
        """Fail (before activation) or revert (after it) the update in progress."""
        event = E.REVERT if self.journal.state in ACTIVATED else E.FAIL
        self._enter(event, reason=reason, message=message)
        self.finish()

    def _notified(self, upd: Update) -> None:
        steps.check_runnable(upd.parsed_manifest(), self.formats)
        active = read_active(self.data_dir)
        if (
            self.journal.committed == upd.target
            and active is not None
            and active.sha256 == upd.target.sha256
        ):
            self.commit(E.ALREADY_ACTIVE)
            return
        self._enter(E.FETCH)

    def _downloading(self, upd: Update) -> None:
        if not blob_path(self.data_dir, upd.target.sha256).exists():
            length = upd.parsed_manifest().artifact.length
            self.downloader.fetch(
                upd.target.sha256,
                length,
                part_path(self.data_dir, upd.target.sha256),
                cancelled=self._interrupted,
                attempts_made=upd.attempts,
                on_attempt=lambda n: self._save(update=replace(upd, attempts=n)),
            )
            if self._stop.is_set():
                raise ShutdownError("stopping")
        self._enter(E.DOWNLOADED)

    def _verifying(self, upd: Update) -> None:
        artifact = upd.parsed_manifest().artifact
        sha = upd.target.sha256
        part, blob = part_path(self.data_dir, sha), blob_path(self.data_dir, sha)
        source = part if part.exists() else blob if blob.exists() else None
        if source is None:
            self._enter(E.REFETCH)
            return
        try:
            steps.hash_file(source, artifact.length, sha)
        except ArtifactError:
            source.unlink(missing_ok=True)
            if upd.attempts + 1 >= self.config.download_attempts:
                raise
            self._save(update=replace(upd, attempts=upd.attempts + 1))
            self._enter(E.REFETCH)
            return
        if source == part:
            install_blob(self.data_dir, part, sha)
        self._enter(E.VERIFIED)

    def _smoke_test(self, upd: Update) -> None:
        blob = blob_path(self.data_dir, upd.target.sha256)
        detail = steps.smoke_test(upd.parsed_manifest(), blob, threads=self.threads)
        log.info("smoke test passed: %s", detail)
        self._enter(E.PASSED)

    def _activating(self, upd: Update) -> None:
        slot = upd.target.slot(self.data_dir)
        write_active(self.data_dir, slot)
        self.host.activate(slot)
        self._enter(E.ACTIVATED, update=replace(upd, probation_observed_s=0.0))

    def _probation(self, upd: Update) -> None:
        cfg = self.config
        observed, last = upd.probation_observed_s, time.monotonic()
        while observed < cfg.probation_s:
            woken = self.mailbox.sleep(min(cfg.probation_check_s, cfg.probation_s - observed))
            now = time.monotonic()
            observed, last = observed + (now - last), now
            verdict = judge(
                self.host.health(),
                min_inferences=cfg.probation_min_inferences,
                max_error_rate=cfg.max_error_rate,
                max_latency_p95_ms=cfg.max_latency_p95_ms,
            )
            if verdict is not None:
                self.end(*verdict)
                return
            upd = replace(upd, probation_observed_s=observed)
            self._save(update=upd)
            if woken and self._interrupted():
                raise SupersededError("probation interrupted")
        self.commit(E.HEALTHY)

    def commit(self, event: Event) -> None:
        upd = self.journal.update
        assert upd is not None
        target, committed = upd.target, self.journal.committed
        trust = self.gate.record_commit(self.journal.trust, target.model, target.release)
        previous = committed if committed is not None and committed != target else None
        self._enter(
            event,
            trust=trust,
            committed=target,
            previous=previous or self.journal.previous,
        )
        self.finish()

    def finish(self) -> None:
        """The outcome's actions; idempotent, redone on resume until marked done."""
        j = self.journal
        if j.state == S.REVERTED:
            slot = None if j.committed is None else j.committed.slot(self.data_dir)
            write_active(self.data_dir, slot)
            try:
                if slot is None:
                    self.host.deactivate()
                else:
                    self.host.activate(slot)
            except Exception as exc:
                log.error("cannot reload the committed model after a revert: %s", exc)
        keep = {r.sha256 for r in (j.committed, j.previous) if r is not None}
        active = read_active(self.data_dir)
        if active is not None:
            keep.add(active.sha256)
        for digest in collect_garbage(self.data_dir, keep):
            log.info("removed unused artifact %s…", digest[:16])
        if j.update is not None:
            self._save(update=replace(j.update, done=True))


def _same_assignment(document: bytes, assignment: bytes) -> bool:
    try:
        return DesiredState.decode(document).assignment == assignment
    except ProtocolError:
        return False


__all__ = ["Installer", "one_line"]
