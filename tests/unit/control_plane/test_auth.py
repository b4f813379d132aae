"""Token authentication: hashing, roles, expiry, and the short-lived token cache."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from control_plane.auth import AuthService
from control_plane.auth.tokens import hash_token
from control_plane.db.engine import make_engine
from control_plane.db.migrate import upgrade
from control_plane.errors import AuthenticationError, InvalidInputError
from control_plane.store import Role
from control_plane.store.sql import SqlStore


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def store(tmp_path: Path) -> SqlStore:
    url = f"sqlite:///{tmp_path / 'auth.db'}"
    upgrade(url)
    return SqlStore(make_engine(url))


def test_secret_is_stored_only_as_its_hash(store: SqlStore) -> None:
    auth = AuthService(store, Clock())
    record, secret = auth.create_api_token("ci", Role.OPERATOR, None, "admin")
    assert secret.startswith("efo_") and len(secret) == 47
    assert record.token_hash == hash_token(secret)
    assert all(secret not in str(t) for t in store.list_api_tokens())
    assert auth.authenticate(secret).role is Role.OPERATOR


@pytest.mark.parametrize(
    "token", [None, "", "Bearer x", "efo_short", "efe_" + "A" * 43, "efo_" + "A" * 43]
)
def test_bad_tokens_are_refused(store: SqlStore, token: str | None) -> None:
    with pytest.raises(AuthenticationError):
        AuthService(store, Clock()).authenticate(token)


def test_revocation_elsewhere_reaches_this_worker_within_the_cache_lifetime(
    store: SqlStore,
) -> None:
    clock = Clock()
    worker_a = AuthService(store, clock)
    worker_b = AuthService(store, clock)
    _, secret = worker_a.create_api_token("ci", Role.VIEWER, None, "admin")
    worker_a.authenticate(secret)
    worker_b.authenticate(secret)
    worker_b.revoke_api_token("ci", "admin")
    with pytest.raises(AuthenticationError):
        worker_b.authenticate(secret)  # the revoking worker forgets it at once
    worker_a.authenticate(secret)  # still cached on the other worker ...
    clock.advance(2.01)
    with pytest.raises(AuthenticationError):
        worker_a.authenticate(secret)  # ... but not past the cache lifetime


def test_zero_lifetime_checks_every_request(store: SqlStore) -> None:
    clock = Clock()
    cached = AuthService(store, clock, cache_ttl=timedelta(0))
    _, secret = cached.create_api_token("ci", Role.VIEWER, None, "admin")
    cached.authenticate(secret)
    AuthService(store, clock).revoke_api_token("ci", "admin")
    with pytest.raises(AuthenticationError):
        cached.authenticate(secret)


def test_expiry_is_never_extended_by_the_cache(store: SqlStore) -> None:
    clock = Clock()
    auth = AuthService(store, clock, cache_ttl=timedelta(hours=1))
    _, secret = auth.create_api_token("short", Role.VIEWER, timedelta(seconds=30), "admin")
    auth.authenticate(secret)
    clock.advance(31)
    with pytest.raises(AuthenticationError, match="expired"):
        auth.authenticate(secret)


def test_roles_are_ordered() -> None:
    assert Role.ADMIN.allows(Role.OPERATOR) and Role.OPERATOR.allows(Role.VIEWER)
    assert not Role.VIEWER.allows(Role.OPERATOR) and not Role.OPERATOR.allows(Role.ADMIN)


def test_enrollment_tokens_validate_labels(store: SqlStore) -> None:
    auth = AuthService(store, Clock())
    record, secret = auth.create_enroll_token({"site": "a"}, 3, timedelta(hours=1), "op")
    assert secret.startswith("efe_") and record.max_uses == 3
    with pytest.raises(InvalidInputError):
        auth.create_enroll_token({"site/x": "a"}, 1, timedelta(hours=1), "op")
    with pytest.raises(InvalidInputError):
        auth.create_enroll_token({}, 0, timedelta(hours=1), "op")
