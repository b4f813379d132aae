"""Optional input capture: a reservoir sample of served inputs per window, uploaded.

Theory of operation. Off by default (``[drift] capture_enabled``). Each row
of a successful request is offered to the sample with probability
``capture_rate``; the rows offered form a stream from which a uniform sample
of at most ``capacity`` rows is kept (reservoir sampling, Algorithm R), with
``capacity = min(capture_max_rows, capture_max_bytes // bytes per row)``, so
one window's sample never passes either cap whatever the traffic. A sample
belongs to one window and one served release; a new window or release starts
a new one and seals the old.

Feedback fills labels: :meth:`CaptureSampler.offer` returns a
:class:`CaptureRef` per kept row (reservoir, slot, token), and
:meth:`CaptureSampler.label` sets ``y`` for that row only if the slot still
holds the same row (a later row may have replaced it). A sealed sample waits
``label_grace_s`` after its window ends for late feedback; then
:meth:`CaptureSampler.finalize` encodes it as ``.npz`` (``x`` float32 [n, F],
``y`` int64 [n] with -1 = unknown, ``time`` int64 [n] unix seconds; no
pickled objects) and queues it on the ``capture`` channel with the upload's
query parameters (``model``, ``release``, ``window_start``). The link uploads
it over HTTP (``POST /v1/devices/{d}/captures``); the control plane stores it
once per (device, model, window_start).

Invariants: a sample holds rows of one release and one window; ``n <=
capacity``; labels are only ever written to the row they were given for.
"""

from __future__ import annotations

import functools
import io
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agent._channel_outbox import ChannelOutbox
from agent.errors import AgentError

log = logging.getLogger(__name__)
CAPTURE = "capture"
Array = npt.NDArray[Any]
#: Bytes a captured row costs besides its features: label and time.
ROW_OVERHEAD_BYTES = 16


class Reservoir:
    """One window's sample of one release's rows."""

    def __init__(
        self, model: str, release: int, window_start: int, features: int, capacity: int
    ) -> None:
        self.model, self.release, self.window_start = model, release, window_start
        self.capacity = capacity
        self.x = np.zeros((capacity, features), np.float32)
        self.y = np.full(capacity, -1, np.int64)
        self.time = np.zeros(capacity, np.int64)
        self.tokens = np.zeros(capacity, np.int64)
        self.n = 0  # rows held
        self.seen = 0  # rows offered after the rate filter
        self.sealed = False

    def encode(self) -> bytes:
        out = io.BytesIO()
        n = self.n
        np.savez_compressed(out, x=self.x[:n], y=self.y[:n], time=self.time[:n])
        return out.getvalue()


@dataclass(frozen=True)
class CaptureRef:
    reservoir: Reservoir
    slot: int
    token: int


class CaptureSampler:
    """Per-window reservoir samples of served inputs, queued for upload after a grace period."""

    def __init__(
        self,
        *,
        outbox: ChannelOutbox,
        window_s: int,
        rate: float,
        max_rows: int,
        max_bytes: int,
        label_grace_s: float,
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox, self.window_s, self.rate = outbox, window_s, rate
        self.max_rows, self.max_bytes, self.label_grace_s = max_rows, max_bytes, label_grace_s
        self._rng = np.random.default_rng(seed)
        self._clock = clock
        self._lock = threading.Lock()
        self._current: Reservoir | None = None
        self._sealed: list[Reservoir] = []
        self._tokens = itertools.count(1)

    def capacity(self, features: int) -> int:
        return max(0, min(self.max_rows, self.max_bytes // (4 * features + ROW_OVERHEAD_BYTES)))

    def offer(self, model: str, release: int, x: Array) -> dict[int, CaptureRef]:
        """Offer the rows of ``x`` [B, F]; the refs of the rows kept, by row index."""
        if x.ndim != 2 or not len(x) or self.rate <= 0.0:
            return {}
        chosen = np.flatnonzero(self._rng.random(len(x)) < self.rate) if self.rate < 1 else None
        rows = range(len(x)) if chosen is None else chosen.tolist()
        if not rows:
            return {}
        now = self._clock()
        start = int(now) - int(now) % self.window_s
        refs: dict[int, CaptureRef] = {}
        with self._lock:
            res = self._reservoir(model, release, start, x.shape[1])
            if res is None:
                return {}
            for row in rows:
                res.seen += 1
                if res.n < res.capacity:
                    slot = res.n
                    res.n += 1
                else:
                    slot = int(self._rng.integers(0, res.seen))
                    if slot >= res.capacity:
                        continue
                token = next(self._tokens)
                res.x[slot] = x[row]
                res.y[slot], res.time[slot], res.tokens[slot] = -1, int(now), token
                refs[int(row)] = CaptureRef(res, slot, token)
        return refs

    def _reservoir(self, model: str, release: int, start: int, features: int) -> Reservoir | None:
        res = self._current
        if res is not None and (res.model, res.release, res.window_start) == (
            model,
            release,
            start,
        ):
            return res if res.x.shape[1] == features else None
        self._seal()
        capacity = self.capacity(features)
        if capacity < 1:
            return None
        self._current = Reservoir(model, release, start, features, capacity)
        return self._current

    def _seal(self) -> None:
        if self._current is not None:
            self._current.sealed = True
            if self._current.n:
                self._sealed.append(self._current)
            self._current = None

    def label(self, ref: CaptureRef, label: int) -> bool:
        """Set the label of a kept row; False when it was replaced or already uploaded."""
        with self._lock:
            res = ref.reservoir
            if res not in self._sealed and res is not self._current:
                return False
            if int(res.tokens[ref.slot]) != ref.token:
                return False
            res.y[ref.slot] = label
            return True

    def close(self, start: int) -> None:
        """Seal the sample of the window starting at ``start`` (or earlier)."""
        with self._lock:
            if self._current is not None and self._current.window_start <= start:
                self._seal()

    def finalize(self, *, everything: bool = False) -> int:
        """Queue the sealed samples whose label grace is over (all with ``everything``)."""
        now = self._clock()
        with self._lock:
            if everything:
                self._seal()
            due = [
                r
                for r in self._sealed
                if everything or now >= r.window_start + self.window_s + self.label_grace_s
            ]
            self._sealed = [r for r in self._sealed if r not in due]
        for res in due:
            meta = {
                "model": res.model,
                "release": str(res.release),
                "window_start": str(res.window_start),
            }
            body = res.encode()
            try:
                self.outbox.enqueue(CAPTURE, functools.partial(_constant, body), meta)
            except (AgentError, ValueError) as exc:
                log.error("input sample of window %d not queued: %s", res.window_start, exc)
        return len(due)


def _constant(body: bytes, _seq: int) -> bytes:
    return body  # a sample carries no sequence number of its own


__all__ = ["CAPTURE", "CaptureRef", "CaptureSampler", "Reservoir"]
