"""``fleetctl retraining …``: drift policies, their triggers, and a manual fire.

Policies are applied with ``fleetctl apply -f`` (kind ``DriftPolicy``), next
to rollouts; :func:`apply_policies` is the part of ``apply`` that does it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from control_plane.cli._client import ApiClient
from control_plane.cli._common import console, one_line_errors
from control_plane.cli._output import Format, OutputOption, record, rows
from control_plane.cli._yaml_docs import kind_documents

app = typer.Typer(
    help="Retraining triggers: drift policies, the triggers they fired, a manual fire.",
    no_args_is_help=True,
)
POLICY_COLUMNS = ["name", "model", "cohort", "actions", "cooldown", "revision", "updated_at"]
TRIGGER_COLUMNS = ["id", "policy", "idempotency_key", "status", "attempts", "manual",
                   "created_at", "last_error"]  # fmt: skip
KIND = "DriftPolicy"


def policy_documents(path: Path) -> list[dict[str, Any]]:
    """DriftPolicy documents in a YAML file, or in every ``*.yaml``/``*.yml`` of a directory."""
    return kind_documents(path, KIND)


def apply_policies(client: ApiClient, path: Path, output: Format) -> list[dict[str, Any]]:
    """PUT every DriftPolicy document under ``path``; print one line each in table mode."""
    results = []
    for document in policy_documents(path):
        name = document["metadata"]["name"]
        applied = client.put(f"/v1/retraining/policies/{name}", document)
        results.append(applied)
        if output is Format.table:
            console.print(f"driftpolicy/{name} {applied['result']}")
    return results


@app.command("policies")
@one_line_errors
def policies(
    model: Annotated[str | None, typer.Option(help="Only policies of this model.")] = None,
    output: OutputOption = Format.table,
) -> None:
    """List drift policies."""
    found = ApiClient.from_config().get("/v1/retraining/policies", model=model)
    if output is Format.json:
        rows(found, [], output)
        return
    flat = [
        {**p, "actions": ", ".join(a["name"] for a in p["spec"]["spec"]["actions"]),
         "cooldown": p["spec"]["spec"]["cooldown"]}
        for p in found
    ]  # fmt: skip
    rows(flat, POLICY_COLUMNS, output)


@app.command("triggers")
@one_line_errors
def triggers(
    policy: Annotated[str | None, typer.Option(help="Only this policy's triggers.")] = None,
    model: Annotated[str | None, typer.Option(help="Only triggers of this model.")] = None,
    status: Annotated[
        str | None, typer.Option(help="pending, firing, succeeded or failed.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 200,
    output: OutputOption = Format.table,
) -> None:
    """List retraining triggers, newest first, with their actions' progress."""
    found = ApiClient.from_config().get(
        "/v1/retraining/triggers", policy=policy, model=model, status=status, limit=limit
    )
    rows(found, TRIGGER_COLUMNS, output)


@app.command("fire")
@one_line_errors
def fire(
    policy: Annotated[str, typer.Argument(metavar="POLICY", help="A drift policy's name.")],
    evidence: Annotated[
        Path,
        typer.Option(
            "--evidence", exists=True, dir_okay=False, help="Drift evidence JSON (see the docs)."
        ),
    ],
    key: Annotated[
        str | None, typer.Option("--key", help="Idempotency key (default: the policy's).")
    ] = None,
    output: OutputOption = Format.table,
) -> None:
    """Fire a policy's actions now, whatever its conditions and cooldown: tests a wiring.

    The key still deduplicates: firing the same evidence twice fires once
    unless --key differs. The actions run on the server; follow them with
    'fleetctl retraining triggers --policy POLICY'.
    """
    try:
        body = json.loads(evidence.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise typer.BadParameter(f"{evidence}: not valid JSON ({exc})") from exc
    request: dict[str, Any] = {"evidence": body}
    if key is not None:
        request["idempotency_key"] = key
    found = ApiClient.from_config().post(f"/v1/retraining/policies/{policy}/fire", request)
    if output is Format.json:
        record(found, output)
    elif found["fired"]:
        console.print(f"fired {policy}: trigger {found['trigger_id']} ({found['idempotency_key']})")
    else:
        console.print(f"not fired ({found['reason']}): {found['detail']}")


__all__ = ["app", "apply_policies", "policy_documents"]
