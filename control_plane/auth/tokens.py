"""Bearer tokens: random secrets shown once, stored only as SHA-256 hashes.

A token is a prefix naming its kind plus 32 random bytes in URL-safe base64
(``efo_…`` for operators, ``efe_…`` for device enrollment, ``efd_…`` for an
enrolled device). The secrets are
high-entropy, so a plain SHA-256 is enough for storage (no slow KDF needed);
lookups are by hash, so comparing secrets never happens in Python.
"""

from __future__ import annotations

import hashlib
import re
import secrets

OPERATOR_PREFIX = "efo_"
ENROLL_PREFIX = "efe_"
DEVICE_PREFIX = "efd_"
_SHAPE = re.compile(r"ef[oed]_[A-Za-z0-9_-]{43}")


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def well_formed(token: str, prefix: str) -> bool:
    return token.startswith(prefix) and bool(_SHAPE.fullmatch(token))


__all__ = [
    "DEVICE_PREFIX",
    "ENROLL_PREFIX",
    "OPERATOR_PREFIX",
    "hash_token",
    "new_token",
    "well_formed",
]
