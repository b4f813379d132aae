"""Talk to systemd's service manager without libsystemd: readiness and watchdog.

Theory of operation. A unit with ``Type=notify`` is started with
``NOTIFY_SOCKET`` in its environment: the path of an ``AF_UNIX`` datagram
socket, or, when it starts with ``@``, a name in the abstract namespace (the
``@`` stands for a leading NUL byte). The service sends newline-separated
``KEY=VALUE`` assignments to it as one datagram: ``READY=1`` once it serves,
``WATCHDOG=1`` as a keep-alive, ``STOPPING=1`` when it shuts down,
``STATUS=...`` as free text for ``systemctl status``. This is the whole
protocol of ``sd_notify(3)``; a few lines of :mod:`socket` replace the C
library, which a Python wheel cannot assume is installed.

With ``WatchdogSec=`` set, systemd also exports ``WATCHDOG_USEC`` (the
interval) and ``WATCHDOG_PID`` (the process that must ping). A service that
does not send ``WATCHDOG=1`` within the interval is killed and, with
``Restart=on-failure``, restarted. ``sd_watchdog_enabled(3)`` recommends
pinging at half the interval.

Invariants: nothing here raises on a missing or broken notification socket
(notifications are advisory; the daemon keeps working outside systemd), and
nothing is read at import time.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

#: Ready to serve: systemd marks the unit started (``Type=notify``).
READY = "READY=1"
#: Keep-alive for ``WatchdogSec=``.
WATCHDOG = "WATCHDOG=1"
#: Orderly shutdown has begun.
STOPPING = "STOPPING=1"


def _address(environ: Mapping[str, str]) -> str | None:
    """The socket address from ``NOTIFY_SOCKET``, or None when there is none we can use."""
    raw = environ.get("NOTIFY_SOCKET", "")
    if raw.startswith("@"):
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    # Unset, empty, or a form we do not speak (systemd >= 253 also allows
    # "vsock:CID:PORT" for virtual machines): behave as outside systemd.
    return None


def notify(message: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (e.g. ``"READY=1"`` or ``"STATUS=idle\\nWATCHDOG=1"``) to systemd.

    Returns True when the datagram was sent, False when the process is not
    under a service manager (no ``NOTIFY_SOCKET``) or the socket refused it.
    ``environ`` defaults to :data:`os.environ`.
    """
    address = _address(os.environ if environ is None else environ)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def watchdog_interval_s(*, environ: Mapping[str, str] | None = None) -> float | None:
    """The watchdog interval systemd expects pings within, or None when there is no watchdog.

    None also when ``WATCHDOG_PID`` names another process (the variable was
    inherited by a child) or the value is malformed. Ping at half the interval.
    """
    env = os.environ if environ is None else environ
    pid = env.get("WATCHDOG_PID")
    if pid is not None and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    return int(usec) / 1_000_000


__all__ = ["READY", "STOPPING", "WATCHDOG", "notify", "watchdog_interval_s"]
