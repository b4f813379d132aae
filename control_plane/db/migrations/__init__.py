"""Alembic migrations of the schema; :mod:`control_plane.db.migrate` runs them."""
