"""Helpers of the SQL adapter: records <-> rows, lookups, database errors -> ours.

Rows and records share field names, so the mapping is generic: a record
becomes a row field by field (``id == 0`` means "not stored yet" and lets the
database assign one) and a row becomes a record by reading the record's
fields. JSON values are deep-copied both ways so a caller mutating a record
can never mutate a row the session still tracks.

Integrity errors are recognised by the violated constraint's name: PostgreSQL
reports it (SQLSTATE 23505 unique, 23503 foreign key); SQLite reports the
columns (``UNIQUE constraint failed: release.model, release.counter``), which
are looked up in :data:`~control_plane.db.tables.metadata` to find the name.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import PrimaryKeyConstraint, UniqueConstraint
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from control_plane.db.tables import TableBase, metadata
from control_plane.errors import ConflictError, NotFoundError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")
T = TypeVar("T", bound=TableBase)

_PG_UNIQUE_VIOLATION = "23505"
_SQLITE_UNIQUE = "UNIQUE constraint failed: "


def to_row(row_type: type[T], record: DataclassInstance) -> T:
    values = {f.name: copy.deepcopy(getattr(record, f.name)) for f in dataclasses.fields(record)}
    if values.get("id") == 0:
        values["id"] = None
    return row_type(**values)


def to_record(record_type: type[R], row: TableBase) -> R:
    values = {f.name: copy.deepcopy(getattr(row, f.name)) for f in dataclasses.fields(record_type)}
    return record_type(**values)


def require(session: Session, row_type: type[T], key: Any, what: str) -> T:
    """The row with primary key ``key``; :class:`NotFoundError` naming ``what`` if absent."""
    row = session.get(row_type, key)
    if row is None:
        raise NotFoundError(f"{what} not found")
    return row


def insert(session: Session, row: T, record_type: type[R]) -> R:
    """Insert ``row`` now (so the database assigns its id) and return it as a record."""
    session.add(row)
    session.flush()
    return to_record(record_type, row)


def insert_once(session: Session, row: T, stored: Callable[[], T | None]) -> T:
    """Insert ``row`` in a SAVEPOINT, or return ``stored()`` if a concurrent writer won.

    The caller looked the key up first; a unique violation here means another
    transaction inserted the same key since, and (at READ COMMITTED) the next
    statement sees its row.
    """
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        winner = stored()
        if winner is None:
            raise
        return winner
    return row


def _sqlite_constraint(message: str) -> str | None:
    columns = [item.strip() for item in message[len(_SQLITE_UNIQUE) :].split(",")]
    if not columns or any("." not in c for c in columns):
        return None
    table = metadata.tables.get(columns[0].split(".", 1)[0])
    if table is None:
        return None
    wanted = {c.split(".", 1)[1] for c in columns}
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint | PrimaryKeyConstraint) and (
            {c.name for c in constraint.columns} == wanted
        ):
            return str(constraint.name)
    for index in table.indexes:
        if index.unique and {c.name for c in index.columns} == wanted:
            return str(index.name)
    return None


def unique_violation(exc: IntegrityError) -> str | None:
    """The name of the unique constraint ``exc`` violated, or ``None`` if it is another error."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate is not None:
        if sqlstate != _PG_UNIQUE_VIOLATION:
            return None
        diag = getattr(orig, "diag", None)
        name = getattr(diag, "constraint_name", None)
        return str(name) if name else ""
    message = str(orig).splitlines()[0] if orig is not None else ""
    if message.startswith(_SQLITE_UNIQUE):
        return _sqlite_constraint(message) or ""
    return None


def conflict(exc: IntegrityError, messages: Mapping[str, str], what: str) -> ConflictError:
    """A :class:`ConflictError` naming what ``exc`` says was duplicated.

    ``messages`` maps constraint names to the message for that duplicate;
    ``what`` names the object for any other integrity failure.
    """
    name = unique_violation(exc)
    if name and name in messages:
        return ConflictError(messages[name])
    detail = " ".join(str(exc.orig).split()) if exc.orig is not None else str(exc)
    if name is not None:
        return ConflictError(f"{what} duplicates a stored one ({detail})")
    return ConflictError(f"{what} conflicts with stored data ({detail})")


__all__ = [
    "conflict",
    "insert",
    "insert_once",
    "require",
    "to_record",
    "to_row",
    "unique_violation",
]
