"""Alembic environment: runs migrations on the connection :mod:`control_plane.db.migrate` passes.

Theory of operation: there is no ``alembic.ini`` at runtime. The caller puts an
open SQLAlchemy connection in ``config.attributes["connection"]`` (inside a
transaction it owns) and this script runs the migrations on it. As a fallback,
e.g. for the ``alembic`` command line with a hand-written ini file, the URL in
``sqlalchemy.url`` is opened with :func:`~control_plane.db.engine.make_engine`.

Batch mode is on for SQLite, which cannot ``ALTER`` most things in place: an
``op.batch_alter_table`` block there copies the table, elsewhere it alters it.
Offline (``--sql``) mode is not supported: the schema is always migrated live.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from control_plane.db.engine import make_engine
from control_plane.db.tables import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = context.config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url to migrate")
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported")
_run_online()
