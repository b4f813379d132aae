"""Typed metadata: root, release manifests and assignments.

Each class parses with ``from_dict`` (raising :class:`MetadataError` on any
malformed field), serializes with ``to_dict``, and keeps fields it does not
know so newer writers and older readers interoperate.
"""

from fleetcore.metadata._fields import (
    HASH_ALGORITHMS,
    NAME,
    SPEC_VERSION,
    ArtifactInfo,
    format_time,
    parse_time,
)
from fleetcore.metadata.assignment import Assignment
from fleetcore.metadata.release import (
    FORMATS,
    Compatibility,
    DigestRef,
    ReleaseManifest,
    SmokeTests,
    SmokeVector,
)
from fleetcore.metadata.root import ROLES, Role, Root

__all__ = [
    "FORMATS",
    "HASH_ALGORITHMS",
    "NAME",
    "ROLES",
    "SPEC_VERSION",
    "ArtifactInfo",
    "Assignment",
    "Compatibility",
    "DigestRef",
    "ReleaseManifest",
    "Role",
    "Root",
    "SmokeTests",
    "SmokeVector",
    "format_time",
    "parse_time",
]
