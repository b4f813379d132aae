"""``fleet-agent``: the device daemon's command line.

Commands: ``enroll`` (once per device), ``run`` (the daemon, under systemd),
``status`` (what the device serves and is doing; ``-o json`` for scripts),
``runtimes`` (installed model runtimes) and ``uninstall``. Every command reads
the configuration from ``--config``, else ``$EDGEFLEET_AGENT_CONFIG``, else
``/etc/edgefleet/agent.toml``. Errors are one line on stderr; exit codes:
0 success, 1 failure, 2 usage, 78 not enrolled or misconfigured (``run``).
Heavy modules (the daemon, serving, onnxruntime) are imported inside the
commands that need them, so ``status`` stays fast.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from agent.config import AgentConfig, load_config, resolve_config_path, with_overrides
from agent.errors import AgentError
from fleetcore import __version__
from fleetcore.errors import EdgefleetError
from fleetcore.runtimes import available_runtimes

app = typer.Typer(
    name="fleet-agent",
    help="The edgefleet device agent.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(highlight=False)
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Agent configuration (default: $EDGEFLEET_AGENT_CONFIG or /etc/edgefleet/agent.toml).",
        dir_okay=False,
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (identity, models, state).", file_okay=False),
]


def _fail(message: str, code: int = 1) -> NoReturn:
    sys.stderr.write(f"fleet-agent: {message}\n")
    raise typer.Exit(code)


def _config(path: Path | None, data_dir: Path | None = None) -> tuple[AgentConfig, Path]:
    config_path = resolve_config_path(path)
    try:
        config = load_config(config_path)
        if data_dir is not None:
            config = with_overrides(config, data_dir=data_dir.absolute())
    except AgentError as exc:
        _fail(str(exc), 78)
    return config, config_path


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


def _labels(values: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            _fail(f"--label {value!r} must look like key=value", 2)
        labels[key] = val
    return labels


@app.command("enroll")
def enroll(
    server: Annotated[str, typer.Option("--server", help="Control plane URL.")],
    token: Annotated[
        str,
        typer.Option("--token", envvar="EDGEFLEET_ENROLL_TOKEN", help="Enrollment token (efe_…)."),
    ],
    label: Annotated[
        list[str] | None, typer.Option("--label", help="A label key=value (repeatable).")
    ] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Enroll again with a new key and identity.")
    ] = False,
    root: Annotated[
        Path | None,
        typer.Option(
            "--root",
            exists=True,
            dir_okay=False,
            help="Root metadata from the install bundle: the server's root must chain from it.",
        ),
    ] = None,
    insecure_http: Annotated[
        bool,
        typer.Option(
            "--insecure-http",
            help="Allow a plain http:// server that is not on this machine (trusted networks).",
        ),
    ] = False,
) -> None:
    """Enroll this device: make its key, register it, pin the trust root.

    The root is the server's unless --root gives the one to start from. Plain
    HTTP is refused except to this machine or with --insecure-http.
    """
    from agent.enroll import enroll as do_enroll  # noqa: PLC0415 - collects capabilities

    cfg, config_path = _config(config, data_dir)
    try:
        result = do_enroll(
            server=server,
            token=token,
            labels=_labels(label or []),
            config=cfg,
            config_path=config_path,
            force=force,
            root_anchor=None if root is None else root.read_bytes(),
            allow_http=insecure_http,
        )
    except (AgentError, EdgefleetError) as exc:
        _fail(str(exc))
    identity = result.identity
    console.print(f"enrolled as {identity.device_id} with {identity.server}")
    console.print(f"pinned root v{result.root_version}; configuration in {result.config_path}")
    broker = identity.mqtt.url if identity.mqtt else "none (HTTP only)"
    console.print(f"MQTT broker: {broker}")


@app.command("run")
def run(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Run the agent in the foreground (systemd starts it this way)."""
    from agent import daemon  # noqa: PLC0415

    cfg, _ = _config(config, data_dir)
    code = daemon.run(cfg)
    if code:
        raise typer.Exit(code)


@app.command("status")
def status(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    output: Annotated[
        str, typer.Option("--output", "-o", help="table or json.", case_sensitive=False)
    ] = "table",
) -> None:
    """Show the device id, server, transport, releases, update state and outbox."""
    from agent import status as status_mod  # noqa: PLC0415

    cfg, _ = _config(config, data_dir)
    facts = status_mod.gather(cfg)
    if output.lower() == "json":
        sys.stdout.write(json.dumps(facts, sort_keys=True) + "\n")
        return
    if output.lower() != "table":
        _fail("--output must be table or json", 2)
    table = Table(show_header=False, box=None)
    for name, value in status_mod.rows(facts):
        table.add_row(name, value)
    console.print(table)


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


@app.command(
    "uninstall",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def uninstall(ctx: typer.Context) -> None:
    """Remove the agent (systemd unit, /opt/edgefleet); --purge removes everything."""
    from agent.uninstall import uninstall_command  # noqa: PLC0415 - runs while files vanish

    sub = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    sub.command()(uninstall_command)
    sub(args=list(ctx.args), prog_name="fleet-agent uninstall")


def main() -> None:
    app()


__all__ = ["app", "main"]
