"""Shared CLI plumbing: one-line errors, durations, the console."""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from control_plane.errors import ControlPlaneError
from fleetcore.errors import EdgefleetError

P = ParamSpec("P")
R = TypeVar("R")

# Plain output: paths and metadata values may contain [brackets] that are not markup.
console = Console(highlight=False, markup=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
_DURATION = re.compile(r"(\d+)([dhm])")
_UNITS = {"days": timedelta(days=1), "hours": timedelta(hours=1)}


def working(message: str) -> AbstractContextManager[object]:
    """A spinner on a terminal; nothing when output goes to a file or a pipe."""
    if err_console.is_terminal:
        return err_console.status(message)
    return contextlib.nullcontext()


def fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(1)


def one_line_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn domain and OS errors into one line on stderr and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except EdgefleetError as exc:
            raise fail(exc.one_line()) from None
        except ControlPlaneError as exc:
            raise fail(f"[{exc.code}] {' '.join(exc.message.split())}") from None
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            raise fail(f"[io]{where}: {exc.strerror or exc}") from None

    return wrapper


def parse_pairs(items: list[str] | None, option: str) -> dict[str, str]:
    """``["a=1", "b=2"]`` from a repeatable ``--option key=value``."""
    result = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{option} {item!r} must look like key=value")
        result[key] = value
    return result


def parse_duration(text: str) -> timedelta:
    """``365d``, ``12h`` or ``30m``."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise typer.BadParameter(f"{text!r} is not a duration like 365d, 12h or 30m")
    value, unit = int(match.group(1)), match.group(2)
    return {"d": timedelta(days=value), "h": timedelta(hours=value), "m": timedelta(minutes=value)}[
        unit
    ]


def whole_duration(text: str, unit: Literal["days", "hours"], option: str, example: str) -> int:
    """A duration as a whole number of ``unit``, for an API that counts in them.

    Never rounds: ``36h`` where the API takes days would silently become 1 or 2.

    Raises:
        typer.BadParameter: not a duration, or not a whole number of ``unit``.
    """
    count, rest = divmod(parse_duration(text), _UNITS[unit])
    if rest:
        raise typer.BadParameter(f"{option} must be whole {unit}, like {example} (not {text!r})")
    return count


def parse_time(text: str | None) -> datetime:
    if text is None:
        return datetime.now(timezone.utc).replace(microsecond=0)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time") from exc
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def split_release(ref: str) -> dict[str, Any]:
    """``MODEL@VERSION`` or ``MODEL#COUNTER`` as an assignment request."""
    for sep, key in (("#", "release"), ("@", "version")):
        name, found, value = ref.partition(sep)
        if found and name and value:
            if key == "release":
                if not value.isdigit():
                    raise typer.BadParameter(f"{ref!r}: the release counter must be a number")
                return {"model": name, "release": int(value)}
            return {"model": name, "version": value}
    raise typer.BadParameter(f"{ref!r} must look like MODEL@VERSION or MODEL#COUNTER")


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
