"""The control plane's database: engines, tables and schema migrations.

:func:`make_engine` opens SQLite or PostgreSQL; :data:`metadata` holds the
tables (:mod:`control_plane.db.tables`); :mod:`control_plane.db.migrate`
creates and upgrades the schema with Alembic. Services never use this package
directly: they go through :class:`control_plane.store.Store`.
"""

from control_plane.db import migrate
from control_plane.db.engine import for_writing, make_engine
from control_plane.db.tables import metadata

__all__ = ["for_writing", "make_engine", "metadata", "migrate"]
