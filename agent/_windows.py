"""The window timer: one thread that closes clock-aligned windows and runs ticks.

Theory of operation. Windows of length L start at unix times that are
multiples of L, the same on every device, so the control plane can merge
windows across the fleet. :class:`WindowTimer` keeps, per registered window
length, the start of the window in progress; when the wall clock passes into
a later window it calls every closer of that length with the start of the
window that ended, once. Between boundaries it calls the *tick* callbacks
about every ``tick_s`` (the drift probe folds pending rows and follows model
switches there). A window that began before the agent started is reported
from the agent's start; windows during which the agent was down are simply
absent. A clock stepped backwards does not close anything until it passes
the window in progress again.

Every callback runs on this one thread; an exception in one is logged and
never stops the others or the timer. :meth:`WindowTimer.stop` closes the
windows in progress (partial windows: the next start sends the rest under
the same window start, and counts merge by addition).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)
Closer = Callable[[int], object]


class WindowTimer:
    def __init__(
        self,
        *,
        tick_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tick_s, self._clock = tick_s, clock
        self._closers: dict[int, list[Closer]] = {}
        self._ticks: list[Callable[[], object]] = []
        self._open: dict[int, int] = {}  # length -> start of the window in progress
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def every(self, length_s: int, closer: Closer) -> None:
        """Call ``closer(window_start)`` when a window of ``length_s`` seconds ends."""
        if not 1 <= length_s <= 86400:
            raise ValueError("a window is 1 to 86400 seconds long")
        self._closers.setdefault(length_s, []).append(closer)

    def on_tick(self, callback: Callable[[], object]) -> None:
        self._ticks.append(callback)

    def window_start(self, length_s: int) -> int:
        now = int(self._clock())
        return now - now % length_s

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="windows", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread, then close the windows in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for length, start in sorted(self._open.items()):
            self._close(length, start)
        self._open.clear()

    def step(self) -> None:
        """One pass: close ended windows, then run the ticks (the thread's body, for tests)."""
        now = int(self._clock())
        for length in self._closers:
            start = now - now % length
            current = self._open.get(length)
            if current is None or start < current:
                self._open[length] = start if current is None else current
            elif start > current:
                self._close(length, current)
                self._open[length] = start
        for tick in self._ticks:
            _call(tick)

    def _close(self, length: int, start: int) -> None:
        for closer in self._closers.get(length, []):
            _call(functools.partial(closer, start))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.step()
            now = self._clock()
            boundary = min(
                ((int(now) // length + 1) * length for length in self._closers), default=now + 1
            )
            self._stop.wait(max(0.01, min(self.tick_s, boundary - now + 0.01)))


def _call(callback: Callable[[], object]) -> None:
    try:
        callback()
    except Exception:  # a bug in one report must not stop the others
        log.exception("window callback failed")


__all__ = ["WindowTimer"]
