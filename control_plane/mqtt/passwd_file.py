"""Writing Mosquitto's password file atomically and telling the broker to reload it.

Theory of operation: :func:`write_password_file` holds an exclusive ``fcntl``
lock (a ``.lock`` file beside the password file) while it reads the current
file, computes the new content and replaces the file: temp file in the same
directory, ``fsync``, ``os.replace``, ``fsync`` of the directory. Every
writer on the host (each uvicorn worker) takes the same lock and reads the
accounts *inside* it, so the last writer always writes the newest state and no
writer's change is lost. Lines for users the caller does not manage (a
monitoring user, test users) are kept as they are.

The new file keeps the old one's mode and group, so a file made readable to
the ``mosquitto`` group stays readable to it. :func:`signal_reload` sends
SIGHUP to the pid in Mosquitto's pid file; Mosquitto then re-reads the file
and disconnects connected clients whose credential is gone.

Errors: any ``OSError`` becomes :class:`BrokerSyncError` naming the path.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from control_plane.errors import ControlPlaneError
from control_plane.mqtt.passwords import Account, parse_lines

DEFAULT_MODE = 0o640


class BrokerSyncError(ControlPlaneError):
    """The password file could not be written or the broker not signalled."""

    code = "broker_sync"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = path.with_name(f".{path.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _replace(path: Path, text: str, like: os.stat_result | None) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    mode = DEFAULT_MODE if like is None else like.st_mode & 0o777
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            if like is not None and like.st_gid != os.getegid():
                with contextlib.suppress(PermissionError):  # not in that group: the mode stays
                    os.fchown(out.fileno(), -1, like.st_gid)
            os.fchmod(out.fileno(), mode)
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_password_file(
    path: Path,
    accounts: Callable[[list[Account]], Iterable[Account]],
    *,
    manages: Callable[[str], bool],
) -> bool:
    """Make ``path`` hold ``accounts(current)`` plus the lines of users ``manages`` rejects.

    ``accounts`` is called under the lock with the file's current accounts (so
    a caller can keep a hash that still matches). Returns whether the file changed.
    """
    try:
        with _locked(path):
            try:
                like: os.stat_result | None = path.stat()
                old = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                like, old = None, ""
            current = parse_lines(old)
            wanted = list(accounts(current))
            names = {a.username for a in wanted}
            kept = [a for a in current if not manages(a.username) and a.username not in names]
            text = "".join(a.line() for a in [*wanted, *kept])
            if text == old and like is not None:
                return False
            _replace(path, text, like)
            return True
    except OSError as exc:
        raise BrokerSyncError(f"cannot write the broker password file {path}: {exc}") from exc


def signal_reload(pid_file: Path) -> int:
    """Send SIGHUP to the broker whose pid ``pid_file`` holds; return the pid."""
    try:
        text = pid_file.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise BrokerSyncError(f"cannot read the broker pid file {pid_file}: {exc}") from exc
    if not text.isdigit() or int(text) <= 1:
        raise BrokerSyncError(f"the broker pid file {pid_file} holds no process id")
    pid = int(text)
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise BrokerSyncError(f"cannot signal the broker (pid {pid}) to reload: {exc}") from exc
    return pid


__all__ = ["BrokerSyncError", "signal_reload", "write_password_file"]
