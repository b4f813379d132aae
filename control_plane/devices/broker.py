"""Keeping the broker's accounts equal to the control plane's view of who may connect.

Theory of operation: the password file holds the control plane's own user and
one line per active device (hashes from the database); lines of other users
(a monitoring account, say) are kept. :meth:`BrokerAccounts.sync` rewrites the
file when that set changed (enrollment, decommissioning, start-up) and then
sends the broker SIGHUP, on which Mosquitto re-reads the file and disconnects
clients whose credential is gone. Every worker computes the control plane's
hash with its own salt, so a hash already in the file that matches the
configured password is kept: an unchanged set of accounts means an unchanged
file and no reload.

Failures are logged by :meth:`sync_quietly` and repaired by the next sync: a
device enrolled while the broker was unreachable gets its line then.

Mosquitto notes a SIGHUP in a flag that it clears when a reload *ends*, so a
signal that arrives during a reload (two workers enrolling devices at once) is
lost, and the last device's line would wait unread. Every change is therefore
signalled once more :data:`RESIGNAL_S` seconds after the last one; a reload of
an unchanged file costs the broker nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from control_plane.config import MqttSettings
from control_plane.devices.credentials import is_device_username
from control_plane.mqtt.passwd_file import BrokerSyncError, signal_reload, write_password_file
from control_plane.mqtt.passwords import Account, hash_password, verify_password

log = logging.getLogger("edgefleet.broker")
#: Seconds after the last change at which the broker is signalled once more.
RESIGNAL_S = 1.0


class BrokerAccounts:
    def __init__(self, settings: MqttSettings, accounts: Callable[[], list[tuple[str, str]]]):
        self.settings = settings
        self.accounts = accounts
        self._resignal: threading.Timer | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.settings.password_file is not None

    def _manages(self, username: str) -> bool:
        return username == self.settings.username or is_device_username(username)

    def _wanted(self, current: list[Account]) -> list[Account]:
        password = self.settings.password
        assert password is not None  # settings refuse a password file without one
        secret = password.get_secret_value()
        mine = next(
            (
                a
                for a in current
                if a.username == self.settings.username and verify_password(secret, a.password_hash)
            ),
            None,
        )
        own = mine or Account(self.settings.username, hash_password(secret))
        return [own, *(Account(d, h) for d, h in self.accounts())]

    def sync(self) -> bool:
        """Rewrite the password file if needed and signal the broker; True if it changed.

        Raises:
            BrokerSyncError: the file could not be written or the broker not signalled.
        """
        path = self.settings.password_file
        if path is None:
            return False
        changed = write_password_file(path, self._wanted, manages=self._manages)
        if changed and self.settings.broker_pid_file is not None:
            pid = signal_reload(self.settings.broker_pid_file)
            log.info("broker password file %s updated; broker pid %d reloads it", path, pid)
            self._signal_again_later()
        return changed

    def _signal_again_later(self) -> None:
        with self._lock:
            if self._resignal is not None:
                self._resignal.cancel()
            self._resignal = threading.Timer(RESIGNAL_S, self._signal_again)
            self._resignal.daemon = True
            self._resignal.start()

    def _signal_again(self) -> None:
        pid_file = self.settings.broker_pid_file
        if pid_file is None:
            return
        try:
            signal_reload(pid_file)
        except BrokerSyncError as exc:  # the next sync repairs it
            log.warning("broker not signalled again: %s", exc.message)

    def sync_quietly(self) -> bool:
        try:
            return self.sync()
        except BrokerSyncError as exc:
            log.error("broker accounts not updated: %s", exc.message)
            return False


__all__ = ["BrokerAccounts"]
