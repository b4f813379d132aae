"""``fleetctl device list|show|label|assign|decommission``: enrolled devices."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

import typer

from control_plane.cli._client import ApiClient
from control_plane.cli._common import (
    console,
    err_console,
    one_line_errors,
    parse_pairs,
    split_release,
)
from control_plane.cli._output import Format, OutputOption, record, rows

app = typer.Typer(
    help="Enrolled devices: list, show, label, assign a release, decommission.",
    no_args_is_help=True,
)
COLUMNS = ["id", "state", "current", "target", "online", "seen", "labels"]
SHOWN = [
    "id", "hostname", "labels", "state", "state_at", "last_reason", "last_message", "current",
    "target", "previous", "desired_sequence", "last_seq", "online", "last_seen",
    "malformed_reports", "agent_version", "capabilities", "keyid", "created_at",
    "decommissioned_at",
]  # fmt: skip
REPORT_COLUMNS = ["seq", "state", "time", "transport", "received_at"]
DeviceArg = Annotated[str, typer.Argument(metavar="DEVICE", help="A device id, dev-….")]


def _release(value: dict[str, Any] | None) -> str | None:
    return None if value is None else f"{value['model']}#{value['release']}"


def _age(stamp: str | None, now: datetime) -> str | None:
    """``2026-11-22T07:53:58Z`` as ``12s ago`` (or ``3h ago``), for tables."""
    if not stamp:
        return None
    seconds = max(
        0, int((now - datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds())
    )
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _flat(device: dict[str, Any]) -> dict[str, Any]:
    """Releases as MODEL#COUNTER, labels as k=v, last seen as an age: for tables."""
    labels = device.get("labels") or {}
    return {
        **device,
        **{k: _release(device.get(k)) for k in ("current", "target", "previous")},
        "labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or None,
        "online": "yes" if device.get("online") else "no",
        "seen": _age(device.get("last_seen"), datetime.now(timezone.utc)),
    }


@app.command("list")
@one_line_errors
def list_devices(
    label: Annotated[
        list[str] | None,
        typer.Option("--label", "-l", metavar="KEY=VALUE", help="Only devices with this label."),
    ] = None,
    state: Annotated[
        str | None, typer.Option(help="Only devices in this update state, e.g. failed.")
    ] = None,
    include_all: Annotated[
        bool, typer.Option("--all", help="Include decommissioned devices.")
    ] = False,
    output: OutputOption = Format.table,
) -> None:
    """List devices with their state and releases."""
    parse_pairs(label, "--label")  # refuse malformed selectors before asking
    devices = ApiClient.from_config().get(
        "/v1/devices", label=label or None, state=state, include_decommissioned=include_all
    )
    shown = devices if output is Format.json else [_flat(d) for d in devices]
    rows(shown, COLUMNS, output)


@app.command("show")
@one_line_errors
def show(
    device: DeviceArg,
    reports: Annotated[int, typer.Option(min=1, max=500, help="Newest reports to show.")] = 10,
    output: OutputOption = Format.table,
) -> None:
    """A device: identity, state, releases, desired assignment and newest reports."""
    found = ApiClient.from_config().get(f"/v1/devices/{device}", reports=reports)
    if output is Format.json:
        record(found, output)
        return
    record(_flat(found), output, SHOWN)
    assignment = found.get("assignment")
    if assignment:
        console.print(
            f"desired: {assignment['model']}#{assignment['release']} "
            f"(assignment {assignment['sequence']}, expires {assignment['expires_at']}, "
            f"published {assignment['published_at'] or 'not yet'})"
        )
    rows(found["reports"], REPORT_COLUMNS, output, title="newest reports")


@app.command("label")
@one_line_errors
def label(
    device: DeviceArg,
    pairs: Annotated[
        list[str] | None, typer.Argument(metavar="KEY=VALUE...", help="Labels to set.")
    ] = None,
    remove: Annotated[
        list[str] | None, typer.Option("--remove", metavar="KEY", help="Label to remove.")
    ] = None,
    output: OutputOption = Format.table,
) -> None:
    """Set and remove a device's labels."""
    body = {"set": parse_pairs(pairs, "label"), "remove": list(remove or [])}
    if not body["set"] and not body["remove"]:
        raise typer.BadParameter("give KEY=VALUE labels to set or --remove KEY")
    updated = ApiClient.from_config().patch(f"/v1/devices/{device}/labels", body)
    if output is Format.json:
        record(updated, output)
    else:
        console.print(f"{device} labels: {updated['labels']}")


@app.command("assign")
@one_line_errors
def assign(
    device: DeviceArg,
    ref: Annotated[str, typer.Argument(metavar="MODEL@VERSION", help="Or MODEL#COUNTER.")],
    output: OutputOption = Format.table,
) -> None:
    """Assign a released release to a device: the director signs a new assignment."""
    signed = ApiClient.from_config().post(f"/v1/devices/{device}/assignment", split_release(ref))
    if output is Format.json:
        record(signed, output)
    else:
        console.print(
            f"{device}: assignment {signed['sequence']} to {signed['model']} release "
            f"{signed['release']} (expires {signed['expires_at']})"
        )


@app.command("decommission")
@one_line_errors
def decommission(
    device: DeviceArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Revoke a device's token and broker access for good."""
    if not yes and not typer.confirm(f"decommission {device}? Its credentials stop working"):
        raise typer.Exit(1)
    ApiClient.from_config().delete(f"/v1/devices/{device}")
    err_console.print(f"decommissioned {device}")
