"""Fixtures of the contract suites: every test runs once on SQLite and once on PostgreSQL.

``database_url`` is an empty database: a fresh SQLite file per test, or the
test session's own PostgreSQL database (see :mod:`tests.support.postgres`)
with its schema dropped before each test. PostgreSQL sessions use a non-UTC
session time zone, so the suites prove that times come back as UTC whatever
the server's zone. ``store`` is a :class:`SqlStore` on that database, migrated
to head.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from control_plane.db import migrate
from control_plane.db.engine import make_engine
from control_plane.store import Store
from control_plane.store.sql import SqlStore
from tests.support import postgres

#: A zone with a half-hour offset, far from UTC, for the PostgreSQL sessions.
PG_SESSION_TIME_ZONE = "Asia/Kolkata"


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """This test session's own PostgreSQL database, dropped at the end."""
    server = postgres.server_url()
    postgres.require_server(server)
    with postgres.throwaway_database(server) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'edgefleet.db'}"
    url: str = request.getfixturevalue("postgres_database")
    postgres.reset_schema(url)
    zoned = make_url(url).update_query_dict({"options": f"-c timezone={PG_SESSION_TIME_ZONE}"})
    return zoned.render_as_string(hide_password=False)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(database_url: str, engine: Engine) -> Store:
    migrate.upgrade(database_url)
    return SqlStore(engine)
