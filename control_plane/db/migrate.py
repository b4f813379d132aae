"""Schema migrations, driven from Python: no ``alembic.ini`` is needed at runtime.

Theory of operation: each function opens an engine with
:func:`~control_plane.db.engine.make_engine`, runs Alembic on one connection
inside one transaction, and disposes of the engine. PostgreSQL and SQLite both
have transactional DDL, so a migration that fails leaves the schema at the
revision it started from. On PostgreSQL a transaction-scoped advisory lock
serialises replicas that start at the same time; on SQLite ``BEGIN IMMEDIATE``
does the same.

The revisions live in ``migrations/versions`` and form one line:
``0001_registry`` (artifacts, model versions, releases, revocations), then
``0002_auth_audit`` (API tokens, enrollment tokens, the audit log), then
``0003_devices`` (enrolled devices, their assignments and status reports), then
``0004_rollouts`` (staged rollouts and the devices each one targets), then
``0005_telemetry`` (telemetry and drift windows, their rollups, data
captures), then ``0006_retraining`` (drift policies and retraining triggers).

Errors: an unknown revision, or a database at a revision this code does not
know, raises :class:`~control_plane.errors.InvalidInputError`; database
failures propagate as :class:`sqlalchemy.exc.SQLAlchemyError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

from control_plane.db.engine import for_writing, make_engine
from control_plane.errors import InvalidInputError

SCRIPT_LOCATION = "control_plane.db:migrations"

# Arbitrary, fixed key of the PostgreSQL advisory lock taken while migrating.
_PG_MIGRATION_LOCK = 0x6564_6765_666C


@dataclass(frozen=True)
class Revision:
    """One schema revision, as listed by :func:`history`."""

    id: str
    down_revision: str | None
    message: str


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


@contextmanager
def _migrating(url: str) -> Iterator[Connection]:
    engine = for_writing(make_engine(url))
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                )
            yield connection
    finally:
        engine.dispose()


def _run(url: str, action: Callable[[Config], None]) -> None:
    with _migrating(url) as connection:
        try:
            action(_config(connection))
        except CommandError as exc:
            raise InvalidInputError(str(exc)) from exc


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (creating the schema if empty)."""
    _run(url, lambda config: command.upgrade(config, revision))


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``base`` drops everything)."""
    _run(url, lambda config: command.downgrade(config, revision))


def current(url: str) -> str | None:
    """The revision the database is at; ``None`` for an empty (or missing SQLite) database."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        database = parsed.database
        if not database.startswith("file:") and not Path(database).expanduser().exists():
            return None
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head() -> str:
    """The newest revision this code knows."""
    found = _scripts().get_current_head()
    if found is None:
        raise InvalidInputError("no migrations found")
    return found


def history() -> list[Revision]:
    """Every revision, oldest first."""
    scripts = _scripts()
    found = [
        Revision(
            id=script.revision,
            down_revision=script.down_revision if isinstance(script.down_revision, str) else None,
            message=(script.doc or "").strip(),
        )
        for script in scripts.walk_revisions()
    ]
    return found[::-1]


__all__ = ["SCRIPT_LOCATION", "Revision", "current", "downgrade", "head", "history", "upgrade"]
