"""``fleetctl drift report --png``: reference against current histograms, and the score over time.

matplotlib is an optional extra (``edgefleet[plots]``); it is imported only here,
only when a plot is asked for, with the Agg backend (no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from control_plane.errors import InvalidInputError


def _pyplot() -> Any:
    try:
        import matplotlib  # noqa: PLC0415 - optional, only for plots

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as exc:
        raise InvalidInputError("plots need matplotlib: pip install 'edgefleet[plots]'") from exc
    return plt


def _share(counts: Sequence[int]) -> list[float]:
    total = sum(counts) or 1
    return [c / total for c in counts]


def write_png(sections: Sequence[dict[str, Any]], path: Path) -> Path:
    """One row per report section: up to four feature histograms, then the drift score."""
    plt = _pyplot()
    rows = [s for s in sections if s.get("windows")]
    if not rows:
        raise InvalidInputError("the report has no drift windows to plot")
    columns = 1 + max((len(s["histograms"]) for s in rows), default=0)
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(3.6 * columns, 3.0 * len(rows)), squeeze=False
    )
    for row, section in zip(axes, rows, strict=True):
        title = f"{section['model']} release {section['release']}"
        if section.get("cohort"):
            title += f" {section['cohort']['label']}={section['cohort']['value']}"
        for ax, (name, hist) in zip(row, section["histograms"].items(), strict=False):
            ticks = list(range(len(hist["reference"])))
            ax.bar(ticks, _share(hist["reference"]), width=0.9, alpha=0.5, label="reference")
            ax.step(ticks, _share(hist["current"]), where="mid", color="C3", label="current")
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("bin (below, 16 equal-mass, above)", fontsize=7)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=7)
        score = row[-1]
        ends = [datetime.fromisoformat(w["end"].replace("Z", "+00:00")) for w in section["windows"]]
        # Minutes since the first window: readable for a demo's seconds and a fleet's days.
        times = [(end - ends[0]).total_seconds() / 60 for end in ends]
        values = [w["score"] for w in section["windows"]]
        drifted = [bool(w["drifted"]) for w in section["windows"]]
        score.set_xlabel(f"minutes since {ends[0]:%Y-%m-%d %H:%M} UTC", fontsize=7)
        score.plot(times, values, marker="o", color="C0")
        for when, value, hit in zip(times, values, drifted, strict=True):
            if hit:
                score.plot([when], [value], marker="o", color="C3")
        score.set_title(f"{title}: drift score", fontsize=9)
        score.set_ylabel("largest |mean shift| (sd)", fontsize=7)
        score.tick_params(labelsize=7)
        for ax in row[len(section["histograms"]) : columns - 1]:
            ax.axis("off")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


__all__ = ["write_png"]
