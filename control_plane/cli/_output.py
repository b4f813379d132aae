"""``-o table`` (default, for people) or ``-o json`` (for scripts) output."""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import Enum
from typing import Annotated, Any

import typer
from rich.table import Table

from control_plane.cli._common import console


class Format(str, Enum):
    table = "table"
    json = "json"


OutputOption = Annotated[
    Format, typer.Option("--output", "-o", help="Output format: table or json.")
]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def rows(
    items: Sequence[dict[str, Any]], columns: Sequence[str], fmt: Format, title: str = ""
) -> None:
    if fmt is Format.json:
        console.print_json(json.dumps(list(items), default=str))
        return
    table = Table(*columns, title=title or None)
    for item in items:
        table.add_row(*(_cell(item.get(c)) for c in columns))
    console.print(table)


def record(item: dict[str, Any], fmt: Format, fields: Sequence[str] | None = None) -> None:
    if fmt is Format.json:
        console.print_json(json.dumps(item, default=str))
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key in fields or list(item):
        if key in item:
            table.add_row(key, _cell(item[key]))
    console.print(table)


__all__ = ["Format", "OutputOption", "record", "rows"]
