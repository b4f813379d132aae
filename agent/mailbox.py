"""The updater's inbox: the newest desired state wins.

Theory of operation. Transports run in their own threads and may deliver the
same desired state several times (a retained message on every reconnect, the
HTTP reconciliation after it, a QoS 1 redelivery). They :meth:`Mailbox.offer`
the raw bytes; the single update worker :meth:`Mailbox.take`\\ s them. Only the
newest offer is kept: a desired state replaces the device's whole intent, so
an older one still waiting is worthless. Serializing everything through one
worker means two updates can never run at once.

``wake`` is set on every offer and on :meth:`interrupt`, so a worker sleeping
through probation or a download backoff notices a new message (or shutdown)
at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Mailbox:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: bytes | None = None
        self._ready = threading.Condition(self._lock)
        self.wake = threading.Event()

    def offer(self, document: bytes) -> None:
        with self._lock:
            self._item = bytes(document)
            self._ready.notify_all()
        self.wake.set()

    @property
    def pending(self) -> bool:
        with self._lock:
            return self._item is not None

    def take(self, timeout_s: float = 0.0) -> bytes | None:
        """The newest offer (removing it), waiting up to ``timeout_s`` for one."""
        with self._lock:
            if self._item is None and timeout_s > 0:
                self._ready.wait(timeout_s)
            item, self._item = self._item, None
            return item

    def discard_if(self, duplicate: Callable[[bytes], bool]) -> bool:
        """Drop the waiting offer when ``duplicate(offer)``; True when one is still waiting.

        Atomic, so an offer that arrives meanwhile is never dropped unchecked.
        """
        with self._lock:
            if self._item is not None and duplicate(self._item):
                self._item = None
            return self._item is not None

    def interrupt(self) -> None:
        """Wake a sleeping worker without offering anything (shutdown)."""
        with self._lock:
            self._ready.notify_all()
        self.wake.set()

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when woken by an offer or an interrupt."""
        woken = self.wake.wait(seconds)
        self.wake.clear()
        return woken


__all__ = ["Mailbox"]
