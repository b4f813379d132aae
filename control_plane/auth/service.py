"""Operator authentication and token management.

Roles are ordered viewer < operator < admin: viewers read, operators push,
release and revoke, admins also manage tokens. The first admin token is made
on the server host (``fleetctl token create --local``), so no default
credential ever exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from control_plane.audit import audit
from control_plane.auth.cache import TokenCache
from control_plane.auth.tokens import (
    ENROLL_PREFIX,
    OPERATOR_PREFIX,
    hash_token,
    new_token,
    well_formed,
)
from control_plane.errors import (
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    StateError,
)
from control_plane.store import ApiTokenRecord, EnrollTokenRecord, Role, Store
from fleetcore.metadata import NAME

#: How often ``last_used_at`` is written, so reads do not all become writes.
TOUCH_INTERVAL = timedelta(minutes=1)
#: Default for how long a verified token is trusted without asking the database
#: again (setting ``token_cache_s``). A revocation reaches every worker within
#: this time; the revoking worker's own cache forgets the token at once.
TOKEN_CACHE_TTL = timedelta(seconds=2)
_TOKEN_CACHE_ENTRIES = 4096


@dataclass(frozen=True)
class Actor:
    """Who is calling: the token's name and role."""

    name: str
    role: Role
    token_id: int = 0


class AuthService:
    def __init__(
        self,
        store: Store,
        clock: Callable[[], datetime],
        *,
        cache_ttl: timedelta = TOKEN_CACHE_TTL,
    ) -> None:
        self.store = store
        self.clock = clock
        self.cache_ttl = cache_ttl
        self._cache: TokenCache[Actor] = TokenCache(clock, _TOKEN_CACHE_ENTRIES)

    def authenticate(self, token: str | None) -> Actor:
        if not token:
            raise AuthenticationError("missing bearer token: send 'Authorization: Bearer <token>'")
        if not well_formed(token, OPERATOR_PREFIX):
            raise AuthenticationError("invalid token")
        cached = self.cached(token)
        if cached is not None:
            return cached
        token_hash = hash_token(token)
        now = self.clock()
        actor, until = self._lookup(token_hash, now)
        self._cache.put(token_hash, actor, until)
        return actor

    def cached(self, token: str | None) -> Actor | None:
        """The actor of a recently verified token, without touching the database."""
        return self._cache.get(token)

    def _lookup(self, token_hash: str, now: datetime) -> tuple[Actor, datetime]:
        """The token's actor, and until when that answer may be reused."""
        record = self.store.find_api_token(token_hash)
        if record is None or record.revoked_at is not None:
            raise AuthenticationError("invalid token")
        if record.expires_at is not None and record.expires_at <= now:
            raise AuthenticationError(f"token {record.name!r} expired")
        if record.last_used_at is None or now - record.last_used_at > TOUCH_INTERVAL:
            self.store.update_api_token(record.id, last_used_at=now)
        until = now + self.cache_ttl
        if record.expires_at is not None:
            until = min(until, record.expires_at)
        return Actor(record.name, record.role, record.id), until

    def create_api_token(
        self, name: str, role: Role, expires_in: timedelta | None, actor: str
    ) -> tuple[ApiTokenRecord, str]:
        """Return the stored record and the secret, which is never shown again."""
        if not NAME.fullmatch(name):
            raise InvalidInputError(f"token name {name!r} must match {NAME.pattern}")
        secret = new_token(OPERATOR_PREFIX)
        now = self.clock()
        with self.store.transaction() as tx:
            record = tx.add_api_token(
                ApiTokenRecord(
                    name=name,
                    role=role,
                    token_hash=hash_token(secret),
                    created_at=now,
                    expires_at=None if expires_in is None else now + expires_in,
                )
            )
            audit(tx, actor, "token.create", "api_token", name, {"role": role.value}, now)
        return record, secret

    def revoke_api_token(self, name: str, actor: str) -> ApiTokenRecord:
        match = [t for t in self.store.list_api_tokens() if t.name == name]
        if not match:
            raise NotFoundError(f"no token named {name!r}")
        if match[0].revoked_at is not None:
            raise StateError(f"token {name!r} is already revoked")
        now = self.clock()
        with self.store.transaction() as tx:
            record = tx.update_api_token(match[0].id, revoked_at=now)
            audit(tx, actor, "token.revoke", "api_token", name, {}, now)
        self._cache.drop(match[0].token_hash)
        return record

    def create_enroll_token(
        self, labels: dict[str, str], max_uses: int, expires_in: timedelta, actor: str
    ) -> tuple[EnrollTokenRecord, str]:
        if max_uses < 1:
            raise InvalidInputError("an enrollment token needs at least one use")
        for key, value in labels.items():
            if not NAME.fullmatch(key) or not NAME.fullmatch(value):
                raise InvalidInputError(f"label {key}={value} must use {NAME.pattern}")
        secret = new_token(ENROLL_PREFIX)
        now = self.clock()
        with self.store.transaction() as tx:
            record = tx.add_enroll_token(
                EnrollTokenRecord(
                    token_hash=hash_token(secret),
                    labels=dict(labels),
                    max_uses=max_uses,
                    uses=0,
                    expires_at=now + expires_in,
                    created_at=now,
                    created_by=actor,
                )
            )
            audit(
                tx,
                actor,
                "enroll_token.create",
                "enroll_token",
                str(record.id),
                {
                    "labels": labels,
                    "max_uses": max_uses,
                    "expires_at": record.expires_at.isoformat(),
                },
                now,
            )
        return record, secret


__all__ = ["Actor", "AuthService"]
