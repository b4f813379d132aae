"""The drift report: what ``fleetctl drift report`` and ``GET /v1/models/{m}/drift`` show.

A report has one *section* per release (each release is judged against its own
signed reference) and, with a cohort label, per value of that label. A section
lists every feature with its effect sizes and p-values over the evidence span
(the last ``persist_m`` tested windows), in how many of those windows it
drifted, the breadth over devices and traffic, the accuracy estimate, and the
evidence windows with their drift score. For plotting, it carries the
reference and current bin counts of the features that moved most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from control_plane.drift.analysis import Analysis, EvidenceWindow
from fleetcore.drift import DriftReference
from fleetcore.drift.detect import FeatureResult
from fleetcore.drift.summary import DriftCounts

#: Features whose histograms a section carries for plots.
PLOTTED_FEATURES = 4


@dataclass(frozen=True)
class Cohort:
    label: str
    value: str | None  # None: devices without the label

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "value": self.value}


def _time(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


def _number(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def feature_dict(result: FeatureResult, drifted_windows: int, considered: int) -> dict[str, Any]:
    return {
        "name": result.name,
        "drifted": result.drifted,
        "persistent_windows": drifted_windows,
        "windows": considered,
        "testable": result.testable,
        "reason": result.reason,
        "n": result.n,
        "p_value": _number(result.p, 8),
        "q_value": _number(result.q, 8),
        "p_chi2": _number(result.p_chi2, 8),
        "p_g": _number(result.p_g, 8),
        "p_ks": _number(result.p_ks, 8),
        "p_mean": _number(result.p_mean, 8),
        "p_var": _number(result.p_var, 8),
        "mean_shift_sd": _number(result.mean_shift_sd, 4),
        "sd_ratio": _number(result.sd_ratio, 4),
        "psi": _number(result.psi, 4),
        "js": _number(result.js, 4),
    }


def window_dict(window: EvidenceWindow) -> dict[str, Any]:
    return {
        "start": _time(window.start),
        "end": _time(window.end),
        "n": window.n,
        "devices": window.devices,
        "tested": window.tested,
        "drifted": list(window.drifted),
        "score": round(window.score, 4),
    }


def section_dict(
    model: str,
    analysis: Analysis,
    cohort: Cohort | None,
    reference: DriftReference,
    current: DriftCounts | None,
) -> dict[str, Any]:
    considered = analysis.windows_considered
    features = [
        feature_dict(f, analysis.drifted_windows.get(f.name, 0), considered) for f in analysis.span
    ]
    features.sort(key=lambda f: (not f["drifted"], -(abs(f["mean_shift_sd"] or 0.0))))
    accuracy = analysis.accuracy
    return {
        "model": model,
        "release": analysis.release,
        "reference": analysis.reference,
        "cohort": None if cohort is None else cohort.to_dict(),
        "alarm": analysis.alarm,
        "persistent_features": list(analysis.persistent_features),
        "span": {"start": _time(analysis.span_start), "end": _time(analysis.span_end)},
        "samples": analysis.samples,
        "windows_drifted": analysis.windows_drifted,
        "windows_considered": considered,
        "breadth": {
            "devices_tested": analysis.devices_tested,
            "devices_drifted": analysis.devices_drifted,
            "share_devices": round(analysis.share_devices, 4),
            "share_traffic": round(analysis.share_traffic, 4),
        },
        "accuracy": None
        if accuracy is None
        else {
            "value": _number(accuracy.value, 4),
            "low": _number(accuracy.low, 4),
            "high": _number(accuracy.high, 4),
            "n": accuracy.n,
            "labelled": accuracy.labelled,
            "method": accuracy.method,
        },
        "reference_accuracy": _number(analysis.reference_accuracy, 4),
        "features": features,
        "windows": [window_dict(w) for w in analysis.windows],
        "histograms": _histograms(reference, current, features),
    }


def _histograms(
    reference: DriftReference, current: DriftCounts | None, features: list[dict[str, Any]]
) -> dict[str, Any]:
    if current is None:
        return {}
    index = {name: i for i, name in enumerate(reference.feature_names)}
    out: dict[str, Any] = {}
    for feature in features[:PLOTTED_FEATURES]:
        i = index[feature["name"]]
        out[feature["name"]] = {
            "edges": list(reference.features[i].edges),
            "reference": list(reference.features[i].counts),
            "current": [int(c) for c in current.counts[i]],
        }
    return out


__all__ = ["PLOTTED_FEATURES", "Cohort", "feature_dict", "section_dict", "window_dict"]
