"""``fleetctl release create|list|show|revoke|download|attach-signature`` (talk to a server)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from control_plane.cli._client import ApiClient, ApiError
from control_plane.cli._common import console, human_bytes, one_line_errors, whole_duration
from control_plane.cli._output import Format, OutputOption, record, rows
from control_plane.cli.models import split_ref
from control_plane.cli.release import app
from control_plane.signing.keyring import write_public_file
from control_plane.signing.verify import read_metadata
from fleetcore.envelope import Envelope

COLUMNS = ["model", "counter", "version", "state", "signatures", "sha256", "expires"]
SHOWN = [
    "model", "counter", "version", "state", "signatures", "sha256", "length", "manifest_sha256",
    "expires", "provenance", "created_by", "created_at", "revoked_at", "revoke_reason",
]  # fmt: skip
Ref = Annotated[str, typer.Argument(metavar="NAME@VERSION")]


def find_release(client: ApiClient, ref: str) -> dict[str, Any]:
    name, version = split_ref(ref)
    for item in client.get("/v1/releases", model=name):
        if item["version"] == version:
            result: dict[str, Any] = item
            return result
    raise ApiError("not_found", f"{ref} has no release")


def _line(item: dict[str, Any]) -> str:
    return (
        f"{item['model']}@{item['version']} is release {item['counter']} ({item['state']}): "
        f"sha256 {item['sha256'][:16]}…, {human_bytes(item['length'])}, "
        f"{item['signatures']} release signature(s), expires {item['expires']}"
    )


def _report(release: dict[str, Any], output: Format) -> None:
    if output is Format.json:
        record(release, output)
    else:
        console.print(_line(release))


@app.command("create")
@one_line_errors
def create(
    ref: Ref,
    offline: Annotated[
        bool, typer.Option("--offline", help="Leave it unsigned for an offline release key.")
    ] = False,
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="Manifest lifetime in days, e.g. 365d.")
    ] = None,
    floor: Annotated[
        int, typer.Option(min=0, help="Devices refuse releases of this model below this counter.")
    ] = 0,
    output: OutputOption = Format.table,
) -> None:
    """Release a validated version: the server signs its manifest with the release key.

    With --offline the manifest waits: download it, sign it with 'fleetctl
    release sign' where the key lives, and attach the signature.
    """
    name, version = split_ref(ref)
    body: dict[str, Any] = {"model": name, "version": version, "offline": offline, "floor": floor}
    if expires_in is not None:
        body["expires_in_days"] = whole_duration(
            expires_in, "days", "--expires-in for releases", "365d"
        )
    _report(ApiClient.from_config().post("/v1/releases", body), output)


@app.command("list")
@one_line_errors
def list_releases(
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    output: OutputOption = Format.table,
) -> None:
    """List releases."""
    rows(ApiClient.from_config().get("/v1/releases", model=model), COLUMNS, output)


@app.command("show")
@one_line_errors
def show(ref: Ref, output: OutputOption = Format.table) -> None:
    """Show a release with its provenance (training data, code, quantization, calibration)."""
    record(find_release(ApiClient.from_config(), ref), output, SHOWN)


@app.command("revoke")
@one_line_errors
def revoke(
    ref: Ref,
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")],
    output: OutputOption = Format.table,
) -> None:
    """Revoke a release: its hash is never installed again, and devices assigned it go back.

    Every device whose desired state is the release is given an earlier
    release it ran; devices offline now get it when they come back.
    """
    client = ApiClient.from_config()
    found = find_release(client, ref)
    result = client.post(
        f"/v1/releases/{found['model']}/{found['counter']}/revoke", {"reason": reason}
    )
    _report(result, output)
    devices = result.get("devices")
    if output is Format.table and devices is not None:
        console.print(f"devices reverted to an earlier release: {devices['reverted']}")
        if devices["not_reverted_count"]:
            console.print(f"devices not reverted: {devices['not_reverted_count']}")
            rows(devices["not_reverted"], ["device", "reason"], output)


@app.command("download")
@one_line_errors
def download(
    ref: Ref,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the manifest.")],
) -> None:
    """Download a release manifest (signed, or unsigned while pending)."""
    client = ApiClient.from_config()
    found = find_release(client, ref)
    data = client.request(
        "GET", f"/v1/releases/{found['model']}/{found['counter']}/manifest"
    ).content
    write_public_file(out, data)
    console.print(f"wrote {out} ({found['state']}, {found['signatures']} signature(s))")


@app.command("attach-signature")
@one_line_errors
def attach_signature(
    ref: Ref,
    manifest: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, metavar="MANIFEST", help="Signed offline."),
    ],
) -> None:
    """Attach the signatures of a manifest signed offline with 'fleetctl release sign'."""
    client = ApiClient.from_config()
    found = find_release(client, ref)
    envelope = Envelope.from_bytes(read_metadata(manifest))
    signatures = [{"keyid": s.keyid, "sig": s.sig} for s in envelope.signatures]
    if not signatures:
        raise ApiError("signing", f"{manifest} carries no signatures")
    path = f"/v1/releases/{found['model']}/{found['counter']}/signatures"
    console.print(_line(client.post(path, {"signatures": signatures})))
