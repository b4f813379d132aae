"""``fleetctl db``: create and upgrade the control plane's database schema.

Each command reads the settings (``--config`` and ``EDGEFLEET_*`` variables),
works on ``settings.db_url`` and prints one plain line per fact, e.g.
``revision: 0002_auth_audit``. Passwords in database URLs are never printed.
Errors are one line on stderr with exit status 1: settings and migration
errors as ``[code] message``, database failures as ``[database] message``.

The server stack (SQLAlchemy, Alembic, pydantic-settings) is imported inside
the commands, so ``fleetctl keys`` keeps working on a signing machine that
installed edgefleet without the ``server`` extra.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer

from control_plane.cli import _common
from control_plane.cli._common import console
from control_plane.cli.server import ConfigOption

if TYPE_CHECKING:
    from control_plane.config import Settings

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    help="Create, upgrade and inspect the control plane's database schema.", no_args_is_help=True
)


def _database_errors(func: Callable[P, R]) -> Callable[P, R]:
    """One-line errors for everything a database command can raise."""

    @functools.wraps(func)
    @_common.one_line_errors
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

        try:
            return func(*args, **kwargs)
        except SQLAlchemyError as exc:
            # A DBAPI error's own message; SQLAlchemy's adds the SQL and a help link.
            detail = getattr(exc, "orig", None) or exc
            message = " ".join(str(detail).split()) or type(exc).__name__
            raise _common.fail(f"[database] {message}") from None

    return wrapper


def _settings(config: ConfigOption) -> Settings:
    from control_plane.config import load_settings  # noqa: PLC0415

    return load_settings(config)


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    return make_url(url).render_as_string(hide_password=True)


@app.command("upgrade")
@_database_errors
def upgrade(
    revision: Annotated[
        str, typer.Option("--revision", metavar="REV", help="Target revision (default: head).")
    ] = "head",
    config: ConfigOption = None,
) -> None:
    """Apply migrations up to REV; creates the schema in an empty database."""
    from control_plane.db import migrate  # noqa: PLC0415

    url = _settings(config).db_url
    before = migrate.current(url)
    migrate.upgrade(url, revision)
    after = migrate.current(url)
    console.print(f"database: {_shown(url)}")
    if before == after:
        console.print(f"up to date: {after or 'empty'}")
    else:
        console.print(f"upgraded: {before or 'empty'} -> {after}")


@app.command("current")
@_database_errors
def current(config: ConfigOption = None) -> None:
    """Show the database's revision and whether it is at head."""
    from control_plane.db import migrate  # noqa: PLC0415

    url = _settings(config).db_url
    revision, head = migrate.current(url), migrate.head()
    console.print(f"database: {_shown(url)}")
    console.print(f"revision: {revision or 'empty'}")
    console.print(f"head: {head}")
    if revision == head:
        console.print("status: up to date")
    else:
        console.print("status: behind head; run 'fleetctl db upgrade'")


@app.command("history")
@_database_errors
def history(config: ConfigOption = None) -> None:
    """List the migrations, oldest first, and which of them the database has."""
    from control_plane.db import migrate  # noqa: PLC0415

    url = _settings(config).db_url
    revisions = migrate.history()
    at = migrate.current(url)
    ids = [r.id for r in revisions]
    applied = set(ids[: ids.index(at) + 1]) if at in ids else set()
    head = migrate.head()
    for item in revisions:
        marks = ["applied" if item.id in applied else "pending"]
        marks += [name for name, rev in (("current", at), ("head", head)) if rev == item.id]
        console.print(f"{item.id}: {item.message} ({', '.join(marks)})")


__all__ = ["app"]
