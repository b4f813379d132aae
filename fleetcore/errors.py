"""The one exception tree of edgefleet's shared contract.

Every check that can refuse metadata or an artifact raises a subclass of
:class:`EdgefleetError`. Each class carries a short ``check`` name, so a command
line can print one line that says which check failed::

    EdgefleetError                      base; ``check`` names the failed check
    ├── MetadataError                   malformed, hostile or truncated metadata
    │   └── UnsupportedAlgorithmError   unknown key type, scheme or hash algorithm
    ├── TrustError                      well-formed but not trustworthy
    │   ├── TrustMissingError           no trusted root (fail closed)
    │   ├── SignatureError              threshold of valid signatures not met
    │   ├── ExpiredMetadataError        expired against max(clock, newest signed time)
    │   ├── RollbackError               version, counter or sequence went backwards
    │   │   ├── BelowFloorError         release counter under the model's floor
    │   │   └── DowngradeError          older release this device never committed
    │   ├── MismatchError               assignment disagrees with device or release
    │   └── RevokedError                artifact hash has been revoked
    ├── ArtifactError                   artifact bytes do not match the signed facts
    │   ├── LengthMismatchError         more or fewer bytes than signed
    │   └── HashMismatchError           digest differs from the signed one
    ├── UnsafePathError                 artifact name or digest would escape its store
    ├── RuntimeLoadError                model could not be loaded or run by its runtime
    ├── SmokeTestError                  model outputs differ from the signed smoke vectors
    └── ProtocolError                   a malformed wire message or topic

Foreign exceptions (``json``, ``cryptography``, ``OSError``) are converted at
the edge with ``raise ... from exc`` so callers catch one tree.
"""

from __future__ import annotations


class CheckedError(Exception):
    """An error that names the check it failed, so it can be reported in one line.

    The base of fleetcore's tree and of the agent's own; shared so both report
    ``reason`` the same way.
    """

    check = "error"

    def __init__(self, message: str, *, check: str | None = None) -> None:
        super().__init__(message)
        if check is not None:
            self.check = check

    def one_line(self) -> str:
        """The message as one line, prefixed with the failed check's name."""
        text = " ".join(str(self).split())
        return f"[{self.check}] {text}"


class EdgefleetError(CheckedError):
    """Base of every error raised by fleetcore."""

    check = "edgefleet"


class MetadataError(EdgefleetError):
    """Metadata is not valid JSON or does not have the required shape."""

    check = "format"


class UnsupportedAlgorithmError(MetadataError):
    """A key type, signature scheme or hash algorithm that edgefleet refuses."""

    check = "algorithm"


class TrustError(EdgefleetError):
    """Metadata is well formed but must not be trusted."""

    check = "trust"


class TrustMissingError(TrustError):
    """No trusted root is available, so nothing can be verified (fail closed)."""

    check = "trust-missing"


class SignatureError(TrustError):
    """Fewer valid signatures from distinct authorized keys than the threshold."""

    check = "threshold"


class ExpiredMetadataError(TrustError):
    """Metadata expired, judged against the later of the clock and newest signed time."""

    check = "expiry"


class RollbackError(TrustError):
    """A version, release counter or assignment sequence did not increase."""

    check = "rollback"


class BelowFloorError(RollbackError):
    """The release counter is below the floor the release role set for the model."""

    check = "floor"


class DowngradeError(RollbackError):
    """An older release that this device has never committed."""

    check = "downgrade"


class MismatchError(TrustError):
    """An assignment names another device or disagrees with its release manifest."""

    check = "mismatch"


class RevokedError(TrustError):
    """The artifact's hash is on a signed revocation list."""

    check = "revoked"


class ArtifactError(EdgefleetError):
    """Artifact bytes do not match the length or hash in signed metadata."""

    check = "artifact"


class LengthMismatchError(ArtifactError):
    """More bytes arrived than signed, or the stream ended early."""

    check = "length"


class HashMismatchError(ArtifactError):
    """The artifact's digest differs from the signed digest."""

    check = "hash"


class UnsafePathError(EdgefleetError):
    """An artifact name or digest that could escape its directory."""

    check = "path"


class RuntimeLoadError(EdgefleetError):
    """A model runtime is missing, or could not load or run a model."""

    check = "runtime"


class SmokeTestError(EdgefleetError):
    """The model ran but did not reproduce its signed smoke-test outputs."""

    check = "smoke"


class ProtocolError(EdgefleetError):
    """A wire message, topic or device id that does not follow the protocol."""

    check = "protocol"


__all__ = [
    "ArtifactError",
    "BelowFloorError",
    "CheckedError",
    "DowngradeError",
    "EdgefleetError",
    "ExpiredMetadataError",
    "HashMismatchError",
    "LengthMismatchError",
    "MetadataError",
    "MismatchError",
    "ProtocolError",
    "RevokedError",
    "RollbackError",
    "RuntimeLoadError",
    "SignatureError",
    "SmokeTestError",
    "TrustError",
    "TrustMissingError",
    "UnsafePathError",
    "UnsupportedAlgorithmError",
]
