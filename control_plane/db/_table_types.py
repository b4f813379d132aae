"""The column types and the declarative base every table of :mod:`.tables` uses.

See :mod:`control_plane.db.tables` for the invariants they keep (aware UTC
times on every database, enums as their string values, one naming convention).
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Generic, TypeVar

from sqlalchemy import Dialect, MetaData, String
from sqlalchemy.orm import registry
from sqlalchemy.types import DateTime, TypeDecorator
from sqlmodel import SQLModel

E = TypeVar("E", bound=Enum)

NAMING_CONVENTION = {
    "pk": "pk_%(table_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}

#: The control plane's schema; Alembic's ``target_metadata``.
metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime in, an aware UTC datetime out, on every database."""

    impl = DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()}: times must be timezone-aware")
        value = value.astimezone(timezone.utc)
        # SQLite stores text: normalise to naive UTC so stored values compare correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class EnumText(TypeDecorator[E], Generic[E]):
    """A string enum stored as its value in a plain string column."""

    impl = String
    cache_ok = True

    def __init__(self, enum_type: type[E]) -> None:
        super().__init__()
        self.enum_type = enum_type

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return str(self.enum_type(value).value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum_type(value)


class TableBase(SQLModel, registry=registry(metadata=metadata)):
    """Base of the control plane's tables; keeps them on :data:`metadata`."""


__all__ = ["NAMING_CONVENTION", "EnumText", "TableBase", "UtcDateTime", "metadata"]
