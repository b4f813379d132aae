"""Throwaway PostgreSQL databases for tests.

Theory of operation: tests never share a database with anything else. A test
session creates its own database (``edgefleet_test_<random hex>``) on the
server at :func:`server_url` (``EDGEFLEET_TEST_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``) and drops it at the end, even
if other sessions still hold connections to it. Inside a session,
:func:`reset_schema` empties the database between tests.

When the server is unreachable, :func:`require_server` skips the test with the
reason, except on CI (``CI=true``), where a missing database is a broken
pipeline and fails the test instead.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from control_plane.db.engine import make_engine

SERVER_URL_ENV = "EDGEFLEET_TEST_POSTGRES_URL"
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT_S = 3


def server_url() -> str:
    """The server to create throwaway databases on (any existing database of it)."""
    return os.environ.get(SERVER_URL_ENV) or DEFAULT_SERVER_URL


def _admin_engine(url: str) -> Engine:
    with_timeout = make_url(url).update_query_dict({"connect_timeout": str(CONNECT_TIMEOUT_S)})
    engine = make_engine(with_timeout.render_as_string(hide_password=False))
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def unreachable_reason(url: str) -> str | None:
    """Why the server at ``url`` cannot be used, or ``None`` if it answers."""
    engine = _admin_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        detail = " ".join(str(getattr(exc, "orig", None) or exc).split())
        shown = make_url(url).render_as_string(hide_password=True)
        return f"PostgreSQL at {shown} is unreachable ({detail}); set {SERVER_URL_ENV}"
    finally:
        engine.dispose()
    return None


def require_server(url: str) -> None:
    """Skip (or on CI, fail) the calling test when the server is unreachable."""
    reason = unreachable_reason(url)
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def throwaway_database(server: str, prefix: str = "edgefleet_test") -> Iterator[str]:
    """Create a fresh, empty database on ``server``; yield its URL; drop it afterwards."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = _admin_engine(server)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(server).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def reset_schema(url: str) -> None:
    """Drop every table, index and sequence of the database at ``url``."""
    engine = _admin_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


__all__ = [
    "DEFAULT_SERVER_URL",
    "SERVER_URL_ENV",
    "require_server",
    "reset_schema",
    "server_url",
    "throwaway_database",
    "unreachable_reason",
]
