"""The device agent's exception tree.

Every failure the agent can act on or report is an :class:`AgentError`. Like
fleetcore's errors, each class carries a short ``check`` name: it is the
``reason`` a status report gives for ``failed``, ``reverted`` and ``rejected``,
so a failed update reports ``disk`` or ``download`` the same way a refused
manifest reports fleetcore's ``threshold`` or ``expiry``::

    AgentError                      base; ``check`` names the failed check
    ├── ConfigError                 agent.toml unreadable or invalid
    ├── NotEnrolledError            no identity under data_dir: refuse to run
    ├── AlreadyEnrolledError        identity exists and --force was not given
    ├── StateError                  a state file is corrupt, or the data dir is locked
    ├── ServerError                 the control plane answered outside the protocol
    │   ├── AuthError               401/403: token unknown, expired or revoked
    │   └── ConflictError           409: the server refuses a duplicate
    ├── TransportError              control plane or broker unreachable, timed out
    │   └── DownloadError           artifact download gave up (after retries)
    ├── DiskFullError               ENOSPC, EFBIG or EDQUOT while writing
    ├── InterruptError                 an update step stopped before it finished
    │   ├── SupersededError              a newer desired state arrived
    │   └── ShutdownError            the agent is stopping (SIGTERM)
    └── IllegalTransitionError           a workflow event the current state does not take

Foreign exceptions (httpx, paho, sqlite3, OSError) are converted where they
enter the agent, with ``raise ... from exc``, so callers catch one tree (plus
fleetcore's :class:`~fleetcore.errors.EdgefleetError` for trust and artifact
checks, which keep their own ``check`` names).
"""

from __future__ import annotations

import errno

from fleetcore.errors import CheckedError

#: errno values that mean "no room to write": a full disk, a file size limit
#: (RLIMIT_FSIZE with SIGXFSZ ignored) or a quota.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


class AgentError(CheckedError):
    """Base of every error raised by the agent."""

    check = "agent"


class ConfigError(AgentError):
    check = "config"


class NotEnrolledError(AgentError):
    check = "not-enrolled"


class AlreadyEnrolledError(AgentError):
    check = "enrolled"


class StateError(AgentError):
    check = "state"


class ServerError(AgentError):
    check = "server"

    def __init__(self, message: str, *, status: int = 0, check: str | None = None) -> None:
        super().__init__(message, check=check)
        self.status = status


class AuthError(ServerError):
    check = "auth"


class ConflictError(ServerError):
    check = "conflict"


class TransportError(AgentError):
    check = "transport"


class DownloadError(TransportError):
    check = "download"


class DiskFullError(AgentError):
    check = "disk"


class InterruptError(AgentError):
    check = "interrupted"


class SupersededError(InterruptError):
    check = "superseded"


class ShutdownError(InterruptError):
    check = "shutdown"


class IllegalTransitionError(AgentError):
    check = "workflow"


def is_disk_full(exc: BaseException) -> bool:
    """True for an OSError that means the disk (or a size limit or quota) is full."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


__all__ = [
    "DISK_FULL_ERRNOS",
    "AgentError",
    "AlreadyEnrolledError",
    "AuthError",
    "ConfigError",
    "ConflictError",
    "DiskFullError",
    "DownloadError",
    "IllegalTransitionError",
    "InterruptError",
    "NotEnrolledError",
    "ServerError",
    "ShutdownError",
    "StateError",
    "SupersededError",
    "TransportError",
    "is_disk_full",
]
