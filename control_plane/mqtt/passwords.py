"""Mosquitto password hashes (``$7$``) and password-file lines, computed in Python.

Theory of operation: Mosquitto 2.0 reads ``username:$7$<iterations>$<salt>$<hash>``
lines, where salt and hash are standard base64 of a 12-byte random salt and
of PBKDF2-HMAC-SHA512 (64 bytes) of the password under that salt. The control
plane hashes with :func:`hashlib.pbkdf2_hmac`, stores exactly the line's hash
part in the database, and writes the file without ever holding a device's
password after enrollment.

Iterations: 101, Mosquitto's own default. The passwords hashed here are 256-bit
random secrets, which no number of iterations makes harder to guess; a low count
keeps a broker reload (which re-checks every connected client) and a reconnect
storm after a broker restart cheap.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

ITERATIONS = 101
SALT_BYTES = 12
HASH_BYTES = 64
PREFIX = "$7$"
#: Usernames Mosquitto can take from a password file line (no ':' or whitespace).
USERNAME = re.compile(r"[^:\s]{1,256}")
_HASH = re.compile(r"\$7\$(\d{1,9})\$([A-Za-z0-9+/=]{1,200})\$([A-Za-z0-9+/=]{1,200})")


def new_password() -> str:
    """A fresh random MQTT password (43 URL-safe characters, 256 bits)."""
    return secrets.token_urlsafe(32)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The ``$7$`` hash Mosquitto compares ``password`` against."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, HASH_BYTES)
    salt64, digest64 = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"{PREFIX}{iterations}${salt64}${digest64}"


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches a ``$7$`` hash (False for any other form)."""
    match = _HASH.fullmatch(encoded)
    if match is None:
        return False
    try:
        salt = base64.b64decode(match[2], validate=True)
        expected = base64.b64decode(match[3], validate=True)
    except binascii.Error:
        return False
    digest = hashlib.pbkdf2_hmac(
        "sha512", password.encode("utf-8"), salt, int(match[1]), len(expected)
    )
    return hmac.compare_digest(digest, expected)


@dataclass(frozen=True)
class Account:
    """One line of a password file."""

    username: str
    password_hash: str

    def line(self) -> str:
        if not USERNAME.fullmatch(self.username):
            raise ValueError(
                f"username {self.username[:64]!r} cannot be written to a password file"
            )
        if not _HASH.fullmatch(self.password_hash):
            raise ValueError(f"the hash for {self.username!r} is not a $7$ hash")
        return f"{self.username}:{self.password_hash}\n"


def parse_lines(text: str) -> list[Account]:
    """The accounts of a password file; comments, blank and malformed lines are skipped."""
    accounts = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        username, sep, password_hash = line.partition(":")
        if sep and USERNAME.fullmatch(username):
            accounts.append(Account(username, password_hash))
    return accounts


__all__ = [
    "HASH_BYTES",
    "ITERATIONS",
    "SALT_BYTES",
    "Account",
    "hash_password",
    "new_password",
    "parse_lines",
    "verify_password",
]
