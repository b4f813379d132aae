"""fleetcore: the contract shared by the edgefleet agent and control plane.

Pure and I/O-free: canonical JSON, Ed25519 keys and signed envelopes, typed
root/release/assignment metadata, the trusted-set verifier, streaming artifact
verification, tensors in metadata, and drift-summary formats. Model runtimes
live in :mod:`fleetcore.runtimes` and are imported lazily.
"""

from fleetcore.artifact import StreamVerifier, safe_name, store_path, verify_stream
from fleetcore.envelope import Envelope
from fleetcore.errors import EdgefleetError
from fleetcore.keys import PrivateKey, PublicKey
from fleetcore.metadata import Assignment, ReleaseManifest, Root
from fleetcore.trust import TrustedSet, TrustState, VerifiedRelease

__version__ = "0.1.0"

__all__ = [
    "Assignment",
    "EdgefleetError",
    "Envelope",
    "PrivateKey",
    "PublicKey",
    "ReleaseManifest",
    "Root",
    "StreamVerifier",
    "TrustState",
    "TrustedSet",
    "VerifiedRelease",
    "__version__",
    "safe_name",
    "store_path",
    "verify_stream",
]
