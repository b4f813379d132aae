"""``fleet-agent``: the device daemon's command line."""

from __future__ import annotations

import platform
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fleetcore import __version__
from fleetcore.runtimes import available_runtimes

app = typer.Typer(
    name="fleet-agent",
    help="The edgefleet device agent.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(highlight=False)


def _version(value: bool) -> None:
    if value:
        console.print(f"fleet-agent {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """The edgefleet device agent."""


@app.command("runtimes")
def runtimes() -> None:
    """List the model runtimes this device can run, with their versions.

    Exits 1 when no runtime is installed: install edgefleet[agent,onnx] or
    edgefleet[agent,tflite].
    """
    found = available_runtimes()
    table = Table(
        "runtime", "version", title=f"{platform.machine()} · Python {platform.python_version()}"
    )
    for name, version in sorted(found.items()):
        table.add_row(name, version)
    console.print(table)
    if not found:
        console.print(
            "no model runtime installed: install edgefleet[agent,onnx] or edgefleet[agent,tflite]"
        )
        raise typer.Exit(1)


def main() -> None:
    app()


__all__ = ["app", "main"]
