"""Per-host worker slots: which uvicorn worker is which, via ``fcntl`` locks.

``fleetctl serve`` starts several worker processes that know nothing of each
other. Each takes the lowest free slot: an exclusive, non-blocking ``flock``
on ``<dir>/mqtt-slot-<n>.lock``, held for the life of the process (the kernel
releases it when the process dies, so a replacement worker takes the slot
over). The slot gives each worker a stable MQTT client id (so its persistent
session survives restarts) and elects slot 0 as the one consumer on brokers
without shared subscriptions.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

MAX_SLOTS = 64


@dataclass
class Slot:
    index: int
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def claim_slot(directory: Path, limit: int = MAX_SLOTS) -> Slot:
    """The lowest free slot in ``directory``; OSError when all ``limit`` are taken."""
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(limit):
        fd = os.open(directory / f"mqtt-slot-{index}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return Slot(index, fd)
    raise OSError(f"all {limit} MQTT worker slots in {directory} are taken")


__all__ = ["MAX_SLOTS", "Slot", "claim_slot"]
