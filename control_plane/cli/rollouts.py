"""``fleetctl rollout …`` and ``fleetctl apply``: staged rollouts from YAML or flags."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from control_plane.cli._client import ApiClient
from control_plane.cli._common import console, err_console, one_line_errors
from control_plane.cli._output import Format, OutputOption, record, rows
from control_plane.cli._rollout_docs import documents, flags_document
from control_plane.cli._rollout_view import summary_line, targeted, watch, wave_table
from control_plane.cli.retraining import apply_policies

app = typer.Typer(
    help="Staged rollouts: plan, create, watch, pause, resume, promote, abort, roll back.",
    no_args_is_help=True,
)
RolloutArg = Annotated[str, typer.Argument(metavar="ROLLOUT", help="A rollout id (ro-…) or name.")]
FileOption = Annotated[
    Path | None,
    typer.Option("--file", "-f", exists=True, dir_okay=False, help="A rollout YAML document."),
]
LIST_COLUMNS = ["id", "name", "release", "phase", "wave", "committed", "failed", "devices"]
TARGET_COLUMNS = ["device_id", "wave", "status", "attempts", "sequence", "reason"]


def _one_document(file: Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    if file is None:
        return flags_document(**flags)
    found = documents(file)
    if len(found) != 1:
        raise typer.BadParameter(f"{file} holds {len(found)} rollouts; use 'fleetctl apply -f'")
    return found[0]


# Options shared by ``create`` and ``plan`` (the flag form of a rollout document).
NameOpt = Annotated[str | None, typer.Option("--name", help="Rollout name (flag form).")]
ReleaseOpt = Annotated[
    str | None, typer.Option("--release", metavar="MODEL@VERSION", help="Or MODEL#COUNTER.")
]
SelectorOpt = Annotated[
    str | None, typer.Option(help="Label selector, e.g. 'site in (a,b), hw=rpi4'.")
]
WavesOpt = Annotated[
    str, typer.Option(help="Cumulative wave sizes: percentages (10,50,100) or counts (5n,50n,100).")
]
StratifyOpt = Annotated[str | None, typer.Option(help="Give every value of this label its share.")]
RateOpt = Annotated[float | None, typer.Option(help="Most devices assigned per minute.")]
TimeoutOpt = Annotated[str, typer.Option(help="Per-device timeout, e.g. 30m.")]
RetriesOpt = Annotated[int, typer.Option(min=0, max=10, help="Retries of a failed device.")]
UnavailableOpt = Annotated[
    str | None, typer.Option(help="Most devices updating at once: a count or a percentage.")
]
OnFailureOpt = Annotated[str, typer.Option(help="pause, revert_wave or revert_all.")]
SoakOpt = Annotated[str, typer.Option(help="Soak time after each wave, e.g. 10m.")]
ApprovalOpt = Annotated[
    list[int] | None,
    typer.Option(
        "--approval", metavar="WAVE", help="Wait for 'promote' before wave WAVE (1: the first)."
    ),
]
MinSuccessOpt = Annotated[float, typer.Option(min=0, max=1, help="Install gate success ratio.")]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Evaluate and record gates, never act on them.")
]


def _spec_command(post: Callable[[dict[str, Any], Format], None]) -> Callable[..., None]:
    """A command taking a rollout document from ``-f FILE`` or from flags."""

    @one_line_errors
    def command(
        file: FileOption = None,
        name: NameOpt = None,
        release: ReleaseOpt = None,
        selector: SelectorOpt = None,
        waves: WavesOpt = "10,50,100",
        stratify_by: StratifyOpt = None,
        rate: RateOpt = None,
        timeout: TimeoutOpt = "30m",
        retries: RetriesOpt = 0,
        max_unavailable: UnavailableOpt = None,
        on_failure: OnFailureOpt = "pause",
        soak: SoakOpt = "0s",
        approval: ApprovalOpt = None,
        min_success: MinSuccessOpt = 0.95,
        dry_run: DryRunOpt = False,
        output: OutputOption = Format.table,
    ) -> None:
        flags = {
            "name": name, "release": release, "selector": selector, "waves": waves,
            "stratify_by": stratify_by, "rate": rate, "timeout": timeout, "retries": retries,
            "max_unavailable": max_unavailable, "on_failure": on_failure, "soak": soak,
            "approval": approval, "min_success": min_success, "dry_run": dry_run,
        }  # fmt: skip
        post(_one_document(file, flags), output)

    command.__doc__ = post.__doc__
    return command


def _create(document: dict[str, Any], output: Format) -> None:
    """Create a rollout from a YAML file (-f) or from flags; the server starts it at once."""
    created = ApiClient.from_config().post("/v1/rollouts", document)
    if output is Format.json:
        record(created, output)
        return
    rollout, plan = created["rollout"], created["plan"]
    console.print(
        f"created {rollout['name']} ({rollout['id']}): {rollout['model']} release "
        f"{rollout['release']}, waves {plan['wave_sizes']}"
        + (" (dry run)" if rollout["dry_run"] else "")
    )
    _show_excluded(plan)
    console.print(f"watch it: fleetctl rollout status {rollout['id']} --watch")


def _plan(document: dict[str, Any], output: Format) -> None:
    """Show what a rollout would do: wave sizes, excluded devices and conflicts. Creates nothing."""
    found = ApiClient.from_config().post("/v1/rollouts/plan", document)
    if output is Format.json:
        record(found, output)
        return
    console.print(
        f"{found['model']} release {found['release']}: {found['targets']} device(s) in "
        f"{len(found['wave_sizes'])} waves {found['wave_sizes']}"
    )
    _show_excluded(found)
    if found["conflicts"]:
        console.print("already in another active rollout of this model (create will refuse):")
        shown = [{"device": d, "rollout": r} for d, r in found["conflicts"].items()]
        rows(shown, ["device", "rollout"], Format.table)


def _show_excluded(plan: dict[str, Any]) -> None:
    if plan["excluded_count"]:
        console.print(
            f"{plan['excluded_count']} matching device(s) cannot run this release and are excluded:"
        )
        shown = [{"device": e["device"], "why": "; ".join(e["reasons"])} for e in plan["excluded"]]
        rows(shown, ["device", "why"], Format.table)


app.command("create")(_spec_command(_create))
app.command("plan")(_spec_command(_plan))


@app.command("list")
@one_line_errors
def list_rollouts(
    active: Annotated[bool, typer.Option("--active", help="Only rollouts still running.")] = False,
    model: Annotated[str | None, typer.Option(help="Only rollouts of this model.")] = None,
    output: OutputOption = Format.table,
) -> None:
    """List rollouts, newest first."""
    found = ApiClient.from_config().get("/v1/rollouts", active=active or None, model=model)
    if output is Format.json:
        rows(found, [], output)
        return
    flat = [
        {**r, "release": f"{r['model']}#{r['release']}", "wave": f"{r['wave'] + 1}/{r['waves']}",
         "committed": r["counts"]["committed"],
         "failed": r["counts"]["failed"] + r["counts"]["reverted"],
         "devices": targeted(r)}
        for r in found
    ]  # fmt: skip
    rows(flat, LIST_COLUMNS, output)


@app.command("status")
@one_line_errors
def status(
    rollout: RolloutArg,
    watch_: Annotated[
        bool, typer.Option("--watch", "-w", help="Follow it live until it ends.")
    ] = False,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes.")] = 1.0,
    output: OutputOption = Format.table,
) -> None:
    """A rollout's phase, its waves' progress and its last gate results.

    With --watch, live progress bars per wave; the exit status is 0 when the
    rollout completes and 1 when it fails, is aborted or rolled back.
    """
    client = ApiClient.from_config()
    if watch_:
        final = watch(lambda: client.get(f"/v1/rollouts/{rollout}"), interval, output)
        raise typer.Exit(0 if final["phase"] == "completed" else 1)
    found = client.get(f"/v1/rollouts/{rollout}")
    if output is Format.json:
        record(found, output)
        return
    console.print(summary_line(found))
    console.print(wave_table(found))
    for gate in found["gates"]:
        console.print(f"  gate {gate['gate']}: {gate['outcome']} ({gate['detail']})")


@app.command("devices")
@one_line_errors
def devices(
    rollout: RolloutArg,
    status_: Annotated[
        str | None, typer.Option("--status", help="e.g. failed, installing, rolled_back.")
    ] = None,
    wave: Annotated[
        int | None, typer.Option(min=1, help="Only this wave (1 is the first).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 1000,
    output: OutputOption = Format.table,
) -> None:
    """The rollout's devices in rollout order, with their status and reasons."""
    found = ApiClient.from_config().get(
        f"/v1/rollouts/{rollout}/devices",
        status=status_,
        wave=None if wave is None else wave - 1,
        limit=limit,
    )
    if output is Format.table:
        found = [{**t, "wave": t["wave"] + 1} for t in found]
    rows(found, TARGET_COLUMNS, output)


def _command(name: str, doc: str) -> None:
    @one_line_errors
    def run(
        rollout: RolloutArg,
        reason: Annotated[str | None, typer.Option(help="Recorded in the audit log.")] = None,
        output: OutputOption = Format.table,
    ) -> None:
        body = {} if reason is None else {"reason": reason}
        found = ApiClient.from_config().post(f"/v1/rollouts/{rollout}/{name}", body)
        if output is Format.json:
            record(found, output)
        else:
            console.print(summary_line(found))

    run.__doc__ = doc
    app.command(name)(run)


_command("pause", "Stop assigning devices; updates already under way finish.")
_command("resume", "Go on from where the rollout was paused.")
_command("promote", "Open the next wave now: approves a waiting wave, skips soak and gates.")
_command("abort", "Stop the rollout for good; devices keep what they have (see rollback).")
_command("rollback", "Return every device the rollout touched to its previous release.")


@one_line_errors
def apply(
    path: Annotated[
        Path,
        typer.Option(
            "--file", "-f", exists=True, help="A YAML file (Rollout, DriftPolicy), or a directory."
        ),
    ],
    output: OutputOption = Format.table,
) -> None:
    """Apply Rollout and DriftPolicy documents idempotently (GitOps).

    New ones are created and the same ones left be. A rollout document that
    differs from its stored rollout only in ``paused`` pauses or resumes it;
    any other change is refused (use a new name). A changed drift policy is
    updated.
    """
    client = ApiClient.from_config()
    results = []
    for document in documents(path):
        name = document["metadata"]["name"]
        applied = client.put(f"/v1/rollouts/{name}", document)
        results.append(applied)
        if output is Format.table:
            rollout = applied["rollout"]
            console.print(
                f"rollout/{name} {applied['result']} ({rollout['id']}, {rollout['phase']})"
            )
    results += apply_policies(client, path, output)
    if output is Format.json:
        rows(results, [], output)
    if not results:
        err_console.print(f"no Rollout or DriftPolicy documents in {path}")


__all__ = ["app", "apply"]
