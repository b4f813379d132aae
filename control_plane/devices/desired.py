"""HTTP long-poll for a device's desired state, without a thread per waiting device.

Theory of operation: the ETag of a desired state is its assignment sequence
(``"7"``). :meth:`DesiredService.poll` answers at once when the client's
``If-None-Match`` differs from the current state: 200 with the document, or
204 when the device has no assignment. Otherwise it parks the request on the
event loop in :class:`DesiredWatch` until the state changes or ``wait_s``
passes (then 304, or 204 without an assignment).

A waiting request is an :class:`asyncio.Event`, not a thread. Assignments made
in this process wake their waiters at once (:meth:`DesiredWatch.notify`, safe
from any thread); those made by other workers or replicas are found by one
background task per process, which reads the sequences of all devices with
waiters in a single query every ``desired_check_s`` seconds while anyone waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import anyio.to_thread

from control_plane.devices.director import Director

Sequences = Callable[[Collection[str]], dict[str, int]]
log = logging.getLogger("edgefleet.desired")


def etag(sequence: int) -> str:
    return f'"{sequence}"'


def _matches(if_none_match: str | None, tag: str | None) -> bool:
    """Whether the client already has what ``tag`` names (``None``: no assignment)."""
    if if_none_match is None or tag is None:
        return if_none_match is None and tag is None
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return tag in tags or "*" in tags


@dataclass(eq=False)
class _Waiter:
    seen: int
    event: asyncio.Event = field(default_factory=asyncio.Event)


class DesiredWatch:
    def __init__(self, sequences: Sequences, check_s: float) -> None:
        self.sequences = sequences
        self.check_s = check_s
        self._waiters: dict[str, set[_Waiter]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    async def wait(self, device_id: str, seen: int, timeout_s: float) -> None:
        """Return when the device's sequence is no longer ``seen``, or after ``timeout_s``."""
        self._loop = asyncio.get_running_loop()
        waiter = _Waiter(seen)
        self._waiters.setdefault(device_id, set()).add(waiter)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._check(), name="desired-state watch")
        try:
            await asyncio.wait_for(waiter.event.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(device_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[device_id]

    def notify(self, device_id: str) -> None:
        """Wake the device's waiters; callable from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._wake, device_id)

    def _wake(self, device_id: str) -> None:
        for waiter in self._waiters.get(device_id, ()):
            waiter.event.set()

    async def _check(self) -> None:
        while self._waiters:
            await asyncio.sleep(self.check_s)
            devices = list(self._waiters)
            if not devices:
                break
            try:
                current = await anyio.to_thread.run_sync(self.sequences, devices)
            except Exception:  # a database hiccup: waiters time out or the next check wakes them
                log.exception("cannot read desired sequences")
                continue
            for device_id in devices:
                for waiter in self._waiters.get(device_id, ()):
                    if current.get(device_id, 0) != waiter.seen:
                        waiter.event.set()


@dataclass(frozen=True)
class DesiredAnswer:
    status: int  # 200, 204 or 304
    body: bytes = b""
    etag: str | None = None


#: A long-poll records that its device was seen at most this often per process,
#: so HTTP-only devices have a meaningful ``last_seen`` without a write per poll.
SIGHTING_INTERVAL_S = 30.0
_SIGHTINGS_MAX = 100_000


class DesiredService:
    def __init__(self, director: Director, watch: DesiredWatch) -> None:
        self.director = director
        self.watch = watch
        self._sighted: dict[str, float] = {}  # device -> loop time of the last recorded sighting

    async def _sighting(self, device_id: str, now: float) -> None:
        last = self._sighted.get(device_id)
        if last is not None and now - last < SIGHTING_INTERVAL_S:
            return
        if len(self._sighted) >= _SIGHTINGS_MAX:
            self._sighted.clear()
        self._sighted[device_id] = now
        try:
            await anyio.to_thread.run_sync(
                self.director.store.touch_device, device_id, self.director.clock()
            )
        except Exception:  # a sighting is a hint; the poll itself must not fail for it
            log.exception("cannot record that %s was seen", device_id)

    async def poll(self, device_id: str, if_none_match: str | None, wait_s: float) -> DesiredAnswer:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        await self._sighting(device_id, loop.time())
        while True:
            found = await anyio.to_thread.run_sync(self.watch.sequences, [device_id])
            sequence = found.get(device_id, 0)
            tag = etag(sequence) if sequence else None
            if not _matches(if_none_match, tag):
                desired = await anyio.to_thread.run_sync(self.director.desired, device_id)
                if desired is None:
                    return DesiredAnswer(204)
                return DesiredAnswer(200, desired[1], etag(desired[0]))
            remaining = deadline - loop.time()
            if remaining <= 0:
                return DesiredAnswer(304, etag=tag) if tag else DesiredAnswer(204)
            await self.watch.wait(device_id, sequence, remaining)


__all__ = ["DesiredAnswer", "DesiredService", "DesiredWatch", "etag"]
