"""Building the retraining service from settings, on the control plane's store."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime

from control_plane.config import RetrainingSettings
from control_plane.retraining.dispatch import Dispatcher
from control_plane.retraining.service import RetrainingService
from control_plane.store._retraining_sql import retraining_store


def build_retraining(
    settings: RetrainingSettings, store: object, clock: Callable[[], datetime]
) -> RetrainingService:
    """The service on ``store``'s database; its worker is not started (``start()``)."""
    tx_store = retraining_store(store)
    # Unique per process: leases held by a process that died are never mistaken for ours.
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    dispatcher = Dispatcher(tx_store, clock, owner, batch=settings.batch)
    return RetrainingService(
        tx_store, clock, dispatcher, allow_commands=settings.allow_commands, tick_s=settings.tick_s
    )


__all__ = ["build_retraining"]
