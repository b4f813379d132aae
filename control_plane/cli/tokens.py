"""``fleetctl login``, ``token`` (operator tokens) and ``enroll-token`` (devices)."""

from __future__ import annotations

from typing import Annotated

import typer

from control_plane.cli._client import ApiClient, Login, save_login
from control_plane.cli._common import (
    console,
    err_console,
    one_line_errors,
    parse_duration,
    parse_pairs,
    whole_duration,
)
from control_plane.cli._output import Format, OutputOption, record, rows
from control_plane.cli.server import ConfigOption
from control_plane.store import Role

token_app = typer.Typer(help="Operator API tokens (admin).", no_args_is_help=True)
enroll_app = typer.Typer(help="Device enrollment tokens.", no_args_is_help=True)
TOKEN_COLUMNS = ["name", "role", "created_at", "expires_at", "revoked_at", "last_used_at"]


@one_line_errors
def login(
    server: Annotated[str, typer.Option(metavar="URL", help="Control plane URL.")],
    token: Annotated[
        str,
        typer.Option(
            metavar="TOKEN", envvar="EDGEFLEET_TOKEN", help="Operator token (or EDGEFLEET_TOKEN)."
        ),
    ],
) -> None:
    """Check a server URL and token, then save them for later commands."""
    creds = Login(server.rstrip("/"), token)
    who = ApiClient(creds).get("/v1/whoami")
    path = save_login(creds)
    console.print(f"logged in to {creds.server} as {who['name']} ({who['role']}); saved to {path}")


@token_app.command("create")
@one_line_errors
def create_token(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A name for the token's holder.")],
    role: Annotated[Role, typer.Option(help="viewer, operator or admin.")] = Role.OPERATOR,
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="Lifetime, e.g. 90d (default: none).")
    ] = None,
    local: Annotated[
        bool,
        typer.Option(
            "--local", help="Write to the server's database directly (for the first admin token)."
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Create an operator token; prints only the secret on stdout, once."""
    lifetime = None if expires_in is None else parse_duration(expires_in)
    if local:
        from control_plane.auth import AuthService  # noqa: PLC0415
        from control_plane.config import load_settings  # noqa: PLC0415
        from control_plane.db.engine import make_engine  # noqa: PLC0415
        from control_plane.db.migrate import upgrade  # noqa: PLC0415
        from control_plane.services import utc_now  # noqa: PLC0415
        from control_plane.store.sql import SqlStore  # noqa: PLC0415

        settings = load_settings(config)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.db_url)
        auth = AuthService(SqlStore(make_engine(settings.db_url)), utc_now)
        _, secret = auth.create_api_token(name, role, lifetime, "local-admin")
    else:
        body: dict[str, object] = {"name": name, "role": role.value}
        if expires_in is not None:
            body["expires_in_days"] = whole_duration(
                expires_in, "days", "--expires-in for tokens", "90d"
            )
        secret = ApiClient.from_config().post("/v1/tokens", body)["token"]
    err_console.print(f"created {role.value} token {name!r}; it is shown once:")
    print(secret)  # the secret alone on stdout, for scripts


@token_app.command("list")
@one_line_errors
def list_tokens(output: OutputOption = Format.table) -> None:
    """List operator tokens (never their secrets)."""
    rows(ApiClient.from_config().get("/v1/tokens"), TOKEN_COLUMNS, output)


@token_app.command("revoke")
@one_line_errors
def revoke_token(name: Annotated[str, typer.Argument(metavar="NAME")]) -> None:
    """Revoke an operator token at once."""
    ApiClient.from_config().delete(f"/v1/tokens/{name}")
    console.print(f"revoked token {name!r}")


@enroll_app.command("create")
@one_line_errors
def create_enroll_token(
    label: Annotated[
        list[str] | None,
        typer.Option(
            "--label", metavar="KEY=VALUE", help="Label for enrolled devices (repeatable)."
        ),
    ] = None,
    uses: Annotated[int, typer.Option(min=1, help="How many devices may enroll with it.")] = 1,
    expires_in: Annotated[str, typer.Option("--expires-in", help="Lifetime: 24h, 7d, ...")] = "24h",
    output: OutputOption = Format.table,
) -> None:
    """Create a device enrollment token; the secret is shown once."""
    labels = parse_pairs(label, "--label")
    hours = whole_duration(expires_in, "hours", "--expires-in for enrollment tokens", "24h or 7d")
    created = ApiClient.from_config().post(
        "/v1/enroll-tokens", {"labels": labels, "max_uses": uses, "expires_in_hours": hours}
    )
    record(created, output, ["token", "id", "labels", "max_uses", "expires_at"])


@enroll_app.command("list")
@one_line_errors
def list_enroll_tokens(output: OutputOption = Format.table) -> None:
    """List enrollment tokens with their use counts."""
    columns = ["id", "labels", "uses", "max_uses", "expires_at", "created_by"]
    rows(ApiClient.from_config().get("/v1/enroll-tokens"), columns, output)


@one_line_errors
def audit(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Entries to show.")] = 50,
    actor: Annotated[str | None, typer.Option(help="Only this token name.")] = None,
    object_type: Annotated[
        str | None, typer.Option("--type", help="release, model_version, ...")
    ] = None,
    object_id: Annotated[str | None, typer.Option("--object", help="e.g. sensor@1.0.0")] = None,
    output: OutputOption = Format.table,
) -> None:
    """Show the audit log, newest first."""
    entries = ApiClient.from_config().get(
        "/v1/audit", limit=limit, actor=actor, object_type=object_type, object_id=object_id
    )
    rows(entries, ["at", "actor", "action", "object_type", "object_id", "change"], output)
