"""``fleetctl``: the operator's command line."""

from __future__ import annotations

import typer

from control_plane.cli import (
    db,
    demo,
    devices,
    drift,
    keys,
    models,
    release,
    release_server,
    retraining,
    rollouts,
    server,
    tokens,
)

app = typer.Typer(
    name="fleetctl",
    help="Operate an edgefleet: keys, the model registry, signed releases, devices, staged "
    "rollouts, fleet drift, retraining triggers, tokens and audit. Start with 'fleetctl demo'.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(keys.app, name="keys")
app.add_typer(models.app, name="model")
app.add_typer(release.app, name="release")
app.add_typer(devices.app, name="device")
app.add_typer(rollouts.app, name="rollout")
app.add_typer(drift.app, name="drift")
app.add_typer(retraining.app, name="retraining")
app.add_typer(tokens.token_app, name="token")
app.add_typer(tokens.enroll_app, name="enroll-token")
app.add_typer(db.app, name="db")
app.command("serve")(server.serve)
app.command("demo")(demo.demo)
app.command("login")(tokens.login)
app.command("audit")(tokens.audit)
app.command("apply")(rollouts.apply)
_ = release_server  # registers its commands on release.app


def main() -> None:
    app()


__all__ = ["app", "main"]
