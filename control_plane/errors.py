"""The control plane's exception tree; ``api/errors.py`` maps it to HTTP status codes.

::

    ControlPlaneError                 base; ``code`` is a stable machine-readable name
    ├── NotFoundError                 404  no such model, version, release, token, artifact
    ├── ConflictError                 409  already exists (version, release, counter)
    ├── StateError                    409  wrong lifecycle state for the operation
    ├── InvalidInputError             422  well-formed request with unusable content
    ├── PayloadTooLargeError          413  upload over the configured cap
    ├── AuthenticationError           401  missing, unknown, expired or revoked token
    ├── PermissionDeniedError         403  the token's role may not do this
    ├── SigningError                  422  wrong key, bad signature, key not available
    └── ConfigurationError            (startup) refused settings, e.g. placeholder secrets

fleetcore errors (malformed metadata, runtime load failures) are mapped by the
API too; services raise these classes, never HTTP exceptions.
"""

from __future__ import annotations


class ControlPlaneError(Exception):
    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(ControlPlaneError):
    code = "not_found"


class ConflictError(ControlPlaneError):
    code = "conflict"


class StateError(ControlPlaneError):
    code = "invalid_state"


class InvalidInputError(ControlPlaneError):
    code = "invalid_input"


class PayloadTooLargeError(ControlPlaneError):
    code = "payload_too_large"


class AuthenticationError(ControlPlaneError):
    code = "unauthenticated"


class PermissionDeniedError(ControlPlaneError):
    code = "forbidden"


class SigningError(ControlPlaneError):
    code = "signing"


class ConfigurationError(ControlPlaneError):
    code = "configuration"


__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "ConflictError",
    "ControlPlaneError",
    "InvalidInputError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "SigningError",
    "StateError",
]
