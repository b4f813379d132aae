"""Sessions and transactions for :class:`~control_plane.store.sql.SqlStore`.

Outside a transaction, every store call opens a short session of its own and
commits it. ``transaction()`` binds a new store to one session; its writes run
in SAVEPOINTs so a refused write leaves the transaction usable, and the block
commits at its end or rolls back if it raises. Write sessions come from the
engine returned by :func:`control_plane.db.engine.for_writing` (on SQLite they
take the write lock at BEGIN).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, Engine, Select, update
from sqlalchemy.exc import DataError, IntegrityError, StatementError
from sqlalchemy.orm import Session
from sqlmodel import col

from control_plane.db.engine import for_writing
from control_plane.errors import InvalidInputError, StateError
from control_plane.store._rows import R, T, conflict, to_record

if TYPE_CHECKING:
    from typing_extensions import Self


class SessionScope:
    """Where a store's queries run: a fresh session per call, or one transaction's."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._writer = for_writing(engine)
        self._session: Session | None = None
        self._ended = False

    @contextmanager
    def transaction(self) -> Iterator[Self]:
        if self._session is not None:
            with self._bound_session().begin_nested():
                yield self
            return
        with Session(self._writer, expire_on_commit=False) as session, session.begin():
            bound = type(self)(self._engine)
            bound._session = session
            try:
                yield bound
            finally:
                bound._ended = True

    def _bound_session(self) -> Session:
        if self._ended or self._session is None:
            raise StateError("this store's transaction has ended; start a new one")
        return self._session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        if self._session is not None:
            yield self._bound_session()
            return
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _write(self, what: str, duplicates: Mapping[str, str] | None = None) -> Iterator[Session]:
        """A session for one write; integrity errors become :class:`ConflictError`."""
        try:
            if self._session is not None:
                session = self._bound_session()
                with session.begin_nested():
                    yield session
            else:
                with Session(self._writer, expire_on_commit=False) as session, session.begin():
                    yield session
        except IntegrityError as exc:
            raise conflict(exc, duplicates or {}, what) from exc
        except DataError as exc:  # e.g. a number out of its column's range (PostgreSQL)
            raise InvalidInputError(f"{what}: a value does not fit its column") from exc
        except StatementError as exc:
            if isinstance(exc.orig, ValueError):  # refused by a column type, e.g. a naive time
                raise InvalidInputError(f"{what}: {exc.orig}") from exc
            raise

    def _one(self, query: Select[T], record_type: type[R]) -> R | None:
        with self._read() as session:
            row = session.scalars(query).one_or_none()
            return None if row is None else to_record(record_type, row)

    def _all(self, query: Select[T], record_type: type[R]) -> list[R]:
        with self._read() as session:
            return [to_record(record_type, row) for row in session.scalars(query)]

    @staticmethod
    def _compare_and_set(
        session: Session,
        table: Any,
        row_id: int,
        conditions: list[Any],
        values: dict[str, Any],
        message: str,
    ) -> None:
        """One conditional UPDATE: it takes the row's lock, so the check cannot race."""
        query = update(table).where(col(table.id) == row_id, *conditions).values(**values)
        result = cast(CursorResult[Any], session.execute(query))
        if result.rowcount != 1:
            raise StateError(message)
        session.expire_all()


__all__ = ["SessionScope"]
