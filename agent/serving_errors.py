"""Errors of local inference: the model host, the local HTTP API and its client.

Theory of operation: every failure a caller of :mod:`agent.serving`,
:mod:`agent.localapi` or :mod:`agent.local` can act on is a
:class:`ServingError`. Each class carries a stable ``code`` (the ``code`` of
the HTTP API's ``{"error": {"code", "message"}}`` body, also its ``check``)
and the HTTP status it maps to, so the server and the client translate in one
place each. They join the agent's tree under :class:`agent.errors.AgentError`::

    AgentError
    └── ServingError        base; ``code`` and ``http_status``
        ├── NoModelError    no model is active (503)
        ├── InputError      the caller's feeds do not fit the model (400);
        │                   never counted as a model error
        └── ApiError        the local HTTP API answered with an error, or
                            could not be reached (``http_status`` 0)

A failure of the model itself (the runtime raised while running valid feeds)
is fleetcore's :class:`~fleetcore.errors.RuntimeLoadError`, counted in the
host's error statistics and answered with HTTP 500.

Invariant: ``InputError`` is raised only before the runtime is called, so a
client mistake can never move a model's error rate during probation.
"""

from __future__ import annotations

from agent.errors import AgentError


class ServingError(AgentError):
    """Base of the local inference errors."""

    code = "serving_error"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message, check=self.code)
        self.message = message


class NoModelError(ServingError):
    """No model is active, so there is nothing to run."""

    code = "no_model"
    http_status = 503


class InputError(ServingError):
    """The feeds do not match the model's inputs (names, dtypes, shapes) or are malformed."""

    code = "bad_input"
    http_status = 400


class ApiError(ServingError):
    """An error answer from the local HTTP API, or no answer at all (``http_status`` 0)."""

    def __init__(self, message: str, *, code: str, http_status: int) -> None:
        self.code = code
        self.http_status = http_status
        super().__init__(message)


__all__ = ["ApiError", "InputError", "NoModelError", "ServingError"]
