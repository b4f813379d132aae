"""The link: two threads between a transport, the updater and the outbox.

Theory of operation. The *receiver* calls :meth:`Transport.receive` in a loop
and hands every document to ``on_desired`` (the updater's mailbox); the
*sender* waits until the outbox has something (or a few seconds passed),
sends the oldest reports in ``seq`` order and acknowledges exactly the ones the
transport confirmed, so a report is removed only after PUBACK or HTTP 200.
The two are separate so a 30-second HTTP long-poll never delays a report.
Both back off exponentially (capped at ``retry_max_s``) after a
:class:`~agent.errors.TransportError` and try again; nothing here gives up.

The path in use (``mqtt``, ``http``, ``none``) is written to the state
database whenever it changes, for ``fleet-agent status``.

A PUBACK means the broker has a report, not that the control plane stored it:
a broker can hold a report for a control-plane replica that died (a shared
subscription's queued share) until that replica returns. So the sender sends
the newest confirmed report again after ``resend_s`` without a new one. It
keeps its ``seq``, so the control plane stores it once whichever copy arrives
first, and a rollout waiting for this device's outcome gets it.

After the status reports, the sender drains the other channels of the
:class:`~agent._channel_outbox.ChannelOutbox` the same way, oldest first:
drift summaries and telemetry through :meth:`Transport.publish`, input
captures through ``upload_capture`` (always HTTP). Status reports go first,
so a backlog of summaries never delays an update's outcome. A payload the
control plane refuses outright (an HTTP 4xx other than 401, 403, 408, 429:
it will never be accepted) is dropped with a warning instead of blocking its
channel forever; 409 means it is already stored.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping

from agent._channel_outbox import ChannelItem, ChannelOutbox
from agent.errors import AgentError, AuthError, ConflictError, ServerError, TransportError
from agent.outbox import Outbox
from agent.statedb import StateDB
from agent.transport import Transport
from fleetcore.protocol import Channel

log = logging.getLogger(__name__)
BATCH = 100
#: How long the sender sleeps when the outbox is empty (it wakes on enqueue).
IDLE_S = 5.0
LINK_KEY = "link"
#: Channels published through the transport, in the order they are drained.
PUBLISHED = (Channel.TELEMETRY, Channel.DRIFT)
CAPTURE = "capture"
CaptureUpload = Callable[[bytes, Mapping[str, str]], None]


class Link:
    def __init__(
        self,
        transport: Transport,
        outbox: Outbox,
        on_desired: Callable[[bytes], None],
        *,
        db: StateDB | None = None,
        receive_timeout_s: float = 30.0,
        retry_max_s: float = 60.0,
        resend_s: float = 300.0,
        channels: ChannelOutbox | None = None,
        upload_capture: CaptureUpload | None = None,
    ) -> None:
        self.transport, self.outbox, self.on_desired = transport, outbox, on_desired
        self.channels, self.upload_capture = channels, upload_capture
        if channels is not None:
            channels.wakeup = outbox.wakeup  # one event wakes the one sender
        self.db = db
        self.receive_timeout_s, self.retry_max_s = receive_timeout_s, retry_max_s
        self.resend_s = resend_s
        self._last: tuple[float, bytes] | None = None  # (monotonic time, body) last confirmed
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._current = ""
        self._current_lock = threading.Lock()

    def start(self) -> None:
        self.transport.start()
        for name, target in (("receiver", self._receive_loop), ("sender", self._send_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, flush_timeout_s: float = 2.0) -> None:
        """Stop both threads; give queued reports a moment to leave first."""
        deadline = time.monotonic() + flush_timeout_s
        while self._queued() and time.monotonic() < deadline:
            self.outbox.wakeup.set()
            time.sleep(0.05)
        self._stop.set()
        self.outbox.wakeup.set()
        self.transport.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _queued(self) -> int:
        extra = 0 if self.channels is None else self.channels.depth()
        return self.outbox.stats().depth + extra

    def _note_current(self) -> None:
        current = self.transport.current
        with self._current_lock:
            if current == self._current:
                return
            self._current = current
        log.info("link: %s", current)
        if self.db is not None:
            try:
                self.db.put(LINK_KEY, {"transport": current, "since": time.time()})
            except AgentError as exc:
                log.debug("could not record the link state: %s", exc)

    def _backoff(self, delay: float, exc: Exception) -> float:
        level = logging.ERROR if isinstance(exc, AuthError) else logging.WARNING
        log.log(level, "link: %s; retrying in %.0f s", exc, delay)
        self._stop.wait(delay)
        return min(delay * 2, self.retry_max_s)

    def _receive_loop(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                document = self.transport.receive(self.receive_timeout_s)
            except AgentError as exc:
                self._note_current()
                delay = self._backoff(delay, exc)
                continue
            except Exception as exc:  # a bug must not silently end the receiver
                log.exception("link: unexpected error while receiving")
                delay = self._backoff(delay, exc)
                continue
            delay = 1.0
            self._note_current()
            if document is not None:
                self.on_desired(document)

    def _send_loop(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            self.outbox.wakeup.wait(IDLE_S)
            self.outbox.wakeup.clear()
            try:
                sent = self.flush()
                sent = self.flush_channels() or sent
                delay = 1.0 if sent or self.resend_due() else delay
            except AgentError as exc:
                self._note_current()
                delay = self._backoff(delay, exc)
                self.outbox.wakeup.set()  # try again after the backoff
            except Exception as exc:  # a bug must not silently end the sender
                log.exception("link: unexpected error while sending")
                delay = self._backoff(delay, exc)
                self.outbox.wakeup.set()

    def flush(self) -> bool:
        """Send queued reports until the outbox is empty; True if any were confirmed."""
        sent = False
        while not self._stop.is_set():
            items = self.outbox.peek(BATCH)
            if not items:
                return sent
            confirmed = self.transport.send([item.body for item in items])
            self.outbox.ack(item.seq for item in items[:confirmed])
            if confirmed:
                self._last = (time.monotonic(), items[confirmed - 1].body)
            sent = sent or confirmed > 0
            if confirmed < len(items):
                raise TransportError(f"{len(items) - confirmed} report(s) not confirmed yet")
        return sent

    def flush_channels(self) -> bool:
        """Send queued drift, telemetry and capture payloads; True if any were confirmed."""
        channels = self.channels
        if channels is None:
            return False
        sent = False
        for channel in PUBLISHED:
            sent = self._drain(channel.value, functools.partial(self._publish, channel)) or sent
        if self.upload_capture is not None:
            sent = self._drain(CAPTURE, self._upload) or sent
        return sent

    def _publish(self, channel: Channel, items: list[ChannelItem]) -> int:
        return self.transport.publish(channel, [item.body for item in items])

    def _upload(self, items: list[ChannelItem]) -> int:
        assert self.upload_capture is not None
        self.upload_capture(items[0].body, items[0].meta)
        return 1

    def _drain(self, channel: str, send: Callable[[list[ChannelItem]], int]) -> bool:
        assert self.channels is not None
        sent, isolate = False, channel == CAPTURE
        while not self._stop.is_set():
            items = self.channels.peek(channel, 1 if isolate else BATCH)
            if not items:
                return sent
            try:
                confirmed = send(items)
            except ServerError as exc:
                if isinstance(exc, AuthError) or exc.status in (408, 429):
                    raise
                if len(items) > 1:  # find the refused one: send one at a time
                    isolate = True
                    continue
                # Refused for good (or, 409, already stored): keeping it would block the rest.
                if not isinstance(exc, ConflictError):
                    log.warning("link: the control plane refused a %s payload: %s", channel, exc)
                confirmed = 1
            self.channels.ack(item.id for item in items[:confirmed])
            sent = sent or confirmed > 0
            if confirmed < len(items):
                raise TransportError(f"{len(items) - confirmed} {channel} payload(s) not confirmed")
        return sent

    def resend_due(self) -> bool:
        """Send the newest confirmed report again if it is ``resend_s`` old; True if sent."""
        last = self._last
        if last is None or not self.resend_s or time.monotonic() - last[0] < self.resend_s:
            return False
        if self.outbox.stats().depth:
            return False  # newer reports are on their way
        if self.transport.send([last[1]]) == 1:
            self._last = (time.monotonic(), last[1])
            log.debug("link: sent the newest report again")
            return True
        return False


__all__ = ["LINK_KEY", "Link"]
