"""``fleetctl drift report``: which features drift, how much, since when, and what it costs."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from control_plane.cli._client import ApiClient
from control_plane.cli._common import console, fail, one_line_errors, parse_duration, parse_time
from control_plane.cli._output import Format, OutputOption, record

app = typer.Typer(
    help="Fleet drift: merged on-device summaries tested against each release's reference.",
    no_args_is_help=True,
)


def _since(text: str) -> datetime:
    """An ISO 8601 time, or a duration before now: ``6h ago``, ``30m ago``, ``2d ago``."""
    if text.strip().endswith(" ago"):
        return datetime.now(timezone.utc) - parse_duration(text.strip()[: -len(" ago")])
    return parse_time(text)


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1e}" if value < 1e-3 else f"{value:.3f}"


def _num(value: float | None, fmt: str = "{:+.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def _accuracy(section: dict[str, Any]) -> str:
    found = section["accuracy"]
    if found is None:
        return "no estimate (the reference has no accuracy table, or no samples)"
    how = "measured from device labels" if found["labelled"] else "estimated without labels"
    text = (
        f"{found['value']:.1%} [{found['low']:.1%}, {found['high']:.1%}] {how} "
        f"over {found['n']} predictions"
    )
    if section["reference_accuracy"] is not None:
        text += f"; reference {section['reference_accuracy']:.1%}"
    return text


def _feature_table(section: dict[str, Any]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("feature", "drift", "windows", "shift (sd)", "sd ratio", "PSI", "p", "q"):
        left = column in ("feature", "drift")
        table.add_column(column, justify="left" if left else "right", no_wrap=True)
    for f in section["features"]:
        mark = "DRIFT" if f["drifted"] else ("-" if f["testable"] else "not testable")
        table.add_row(
            f["name"],
            Text(mark, style="bold red") if f["drifted"] else mark,
            f"{f['persistent_windows']}/{f['windows']}",
            _num(f["mean_shift_sd"]),
            _num(f["sd_ratio"], "{:.2f}"),
            _num(f["psi"], "{:.3f}"),
            _p(f["p_value"]),
            _p(f["q_value"]),
        )
    return table


def _few(names: list[str], shown: int = 3) -> str:
    """``a, b, c and 11 more``: a window's drifted features on one line."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def _print(section: dict[str, Any]) -> None:
    # The console prints without markup (names may hold brackets): styles go on Text.
    head = Text(f"{section['model']} release {section['release']}", style="bold")
    if section["cohort"]:
        head.append(
            f"  cohort {section['cohort']['label']}={section['cohort']['value'] or '(none)'}"
        )
    verdict = (
        Text.assemble(
            "  ",
            ("ALARM", "bold red"),
            f": {_few(section['persistent_features'], 5)} drifted in "
            f"{section['windows_drifted']} of the last {section['windows_considered']} windows",
        )
        if section["alarm"]
        else f"  no persistent drift ({section['windows_drifted']} of the last "
        f"{section['windows_considered']} windows drifted)"
    )
    breadth = section["breadth"]
    console.print(head)
    console.print(verdict)
    console.print(
        f"  evidence: {section['samples']} samples, {section['span']['start']} to "
        f"{section['span']['end']}; {breadth['devices_drifted']} of {breadth['devices_tested']} "
        f"devices drift ({breadth['share_traffic']:.0%} of traffic)"
    )
    console.print(f"  accuracy: {_accuracy(section)}")
    if section["features"]:
        console.print(_feature_table(section))
    windows = section["windows"]
    if windows:
        console.print("  windows (end, samples, devices, drifted features):")
        for w in windows[-8:]:
            drifted = _few(w["drifted"]) if w["tested"] else "not tested yet (too few samples)"
            console.print(
                f"    {w['end']}  n={w['n']:<6} devices={w['devices']:<3} {drifted or '-'}"
            )
    console.print()


@app.command("report")
@one_line_errors
def report(
    model: Annotated[str, typer.Argument(help="Model name.")],
    cohort: Annotated[
        str | None,
        typer.Option(help="A label to split by (site), or one cohort (site=north)."),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only windows after this time (ISO 8601 or e.g. 6h ago).")
    ] = None,
    release: Annotated[int | None, typer.Option(help="Only this release counter.")] = None,
    png: Annotated[
        Path | None, typer.Option(dir_okay=False, help="Also write a plot to this PNG file.")
    ] = None,
    output: OutputOption = Format.table,
) -> None:
    """Drifted features with effect sizes and p-values, the accuracy estimate, the windows."""
    params: dict[str, Any] = {}
    if cohort:
        params["cohort"] = cohort
    if since:
        params["since"] = _since(since).isoformat()
    if release is not None:
        params["release"] = release
    found: dict[str, Any] = ApiClient.from_config().get(f"/v1/models/{model}/drift", **params)
    sections: list[dict[str, Any]] = found["sections"]
    if png is not None:
        from control_plane.drift.plot import write_png  # noqa: PLC0415 - matplotlib is optional

        write_png(sections, png)
    if output is not Format.table:
        record(found, output)
        return
    if not sections:
        raise fail(f"no drift summaries for {model} yet")
    for section in sections:
        _print(section)
    if png is not None:
        console.print(f"plot written to {png}")


__all__ = ["app"]
