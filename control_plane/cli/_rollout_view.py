"""How the CLI shows a rollout: one summary line, a table of waves, live progress bars."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from control_plane.cli._common import console
from control_plane.cli._output import Format, record

#: The per-status counts shown for each wave, in workflow order.
COUNTED = ["pending", "installing", "committed", "failed", "reverted", "rolled_back", "cancelled"]
TERMINAL = ("completed", "aborted", "failed", "rolled_back")
HEADERS = {"pending": "pending", "installing": "installing", "committed": "committed",
           "failed": "failed", "reverted": "reverted", "rolled_back": "rolled back",
           "cancelled": "cancelled"}  # fmt: skip
_DONE = ("committed", "failed", "reverted", "rolled_back", "no_previous", "cancelled")


def summary_line(rollout: dict[str, Any]) -> str:
    counts = rollout["counts"]
    line = (
        f"{rollout['name']} ({rollout['id']}): {rollout['model']}#{rollout['release']} "
        f"{rollout['phase']}, wave {rollout['wave'] + 1}/{rollout['waves']}; "
        + ", ".join(f"{counts.get(s, 0)} {s}" for s in COUNTED if counts.get(s))
    )
    excluded = counts.get("excluded", 0)
    if excluded:
        line += f"; {excluded} excluded"
    if rollout.get("reason"):
        line += f" ({rollout['reason']})"
    if rollout.get("dry_run"):
        line += " [dry run]"
    return line


def wave_table(rollout: dict[str, Any]) -> Table:
    table = Table("wave", *(HEADERS[s] for s in COUNTED), title=None)
    for wave in rollout["by_wave"]:
        marker = (
            " <" if wave["wave"] == rollout["wave"] and rollout["phase"] not in TERMINAL else ""
        )
        counts = wave["counts"]
        table.add_row(
            f"{wave['wave'] + 1}{marker}",
            *(str(counts.get(s, 0)) for s in COUNTED),
        )
    return table


def targeted(rollout: dict[str, Any]) -> int:
    """Devices the rollout targets (excluded and removed ones not counted)."""
    counts = rollout["counts"]
    return sum(n for s, n in counts.items() if s not in ("excluded", "removed"))


def _bars(rollout: dict[str, Any]) -> Progress:
    progress = Progress(
        TextColumn("wave {task.fields[wave]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        console=console,
    )
    for wave in rollout["by_wave"]:
        counts = wave["counts"]
        total = sum(n for s, n in counts.items() if s not in ("excluded", "removed"))
        done = sum(counts.get(s, 0) for s in _DONE)
        detail = "  ".join(f"{s} {counts.get(s, 0)}" for s in COUNTED)
        progress.add_task("", total=max(total, 1), completed=done, wave=wave["wave"] + 1,
                          detail=detail)  # fmt: skip
    return progress


def _gates(rollout: dict[str, Any]) -> str:
    return "\n".join(
        f"gate {g['gate']}: {g['outcome']} ({g['detail']})" for g in rollout.get("gates", [])
    )


def watch(fetch: Callable[[], dict[str, Any]], interval_s: float, fmt: Format) -> dict[str, Any]:
    """Follow a rollout until it ends; return its final state.

    On a terminal: live bars per wave. Otherwise (a pipe, a log file, ``-o
    json``): one line each time something changed.
    """
    rollout = fetch()
    if fmt is Format.json or not console.is_terminal:
        last = None
        while True:
            line = summary_line(rollout)
            if line != last:
                if fmt is Format.json:
                    record(rollout, fmt)
                else:
                    console.print(line)
                last = line
            if rollout["phase"] in TERMINAL:
                return rollout
            time.sleep(interval_s)
            rollout = fetch()
    with Live(console=console, refresh_per_second=4) as live:
        while True:
            live.update(Group(summary_line(rollout), _bars(rollout), _gates(rollout)))
            if rollout["phase"] in TERMINAL:
                return rollout
            time.sleep(interval_s)
            rollout = fetch()


__all__ = ["COUNTED", "TERMINAL", "summary_line", "targeted", "watch", "wave_table"]
