"""``fleetctl``: the operator's command line."""

from __future__ import annotations

import typer

from control_plane.cli import keys, release

app = typer.Typer(
    name="fleetctl",
    help="Operate an edgefleet: signing keys and signed model releases.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(keys.app, name="keys")
app.add_typer(release.app, name="release")


def main() -> None:
    app()


__all__ = ["app", "main"]
