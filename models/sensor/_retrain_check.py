"""The retraining job's decisions: accept or reject, which version, what rollout.

Theory of operation (pure: no I/O):

- :func:`compare` scores the current and the new model on two labelled
  holdouts. The new model is accepted only if it is strictly more accurate
  than the current one on the *drifted* holdout (captured rows it never
  trained on) and loses at most :data:`MAX_ORIGINAL_DROP` on the *original*
  holdout (the recipe's held-out synthetic split), so retraining cannot buy
  the new regime by forgetting the old one.
- :func:`next_version` reads the registry's version labels and bumps the
  newest ``MAJOR.MINOR.PATCH`` (labels of another shape, such as the
  ``-float`` parents, are ignored), skipping labels already taken.
- :func:`rollout_document` writes the canary rollout: waves
  ``[canary %, 100 %]``, the canary at least one device, and an approval
  before the second wave when asked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

#: Largest accuracy the new model may lose on the original holdout (1 point).
MAX_ORIGINAL_DROP = 0.01
_SEMVER = re.compile(r"(\d+)\.(\d+)\.(\d+)")
#: Rollout names: lowercase, as the control plane's spec requires.
_ROLLOUT_NAME = re.compile(r"[^a-z0-9._-]+")

Bump = Literal["minor", "patch"]


@dataclass(frozen=True)
class Comparison:
    """Accuracies of the current and the new model, and the verdict."""

    current_original: float
    new_original: float
    current_drifted: float
    new_drifted: float
    original_rows: int
    drifted_rows: int
    accepted: bool
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        return out

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(holdout, current, new, change) rows for a table."""
        return [
            (
                f"original ({self.original_rows} rows)",
                f"{self.current_original:.4f}",
                f"{self.new_original:.4f}",
                f"{self.new_original - self.current_original:+.4f}",
            ),
            (
                f"drifted ({self.drifted_rows} rows)",
                f"{self.current_drifted:.4f}",
                f"{self.new_drifted:.4f}",
                f"{self.new_drifted - self.current_drifted:+.4f}",
            ),
        ]


def accuracy(proba: npt.NDArray[np.floating[Any]], labels: npt.NDArray[np.int64]) -> float:
    return float(np.mean(np.argmax(proba, axis=1) == labels)) if labels.size else 0.0


def compare(
    labels_original: npt.NDArray[np.int64],
    labels_drifted: npt.NDArray[np.int64],
    current: tuple[npt.NDArray[np.floating[Any]], npt.NDArray[np.floating[Any]]],
    new: tuple[npt.NDArray[np.floating[Any]], npt.NDArray[np.floating[Any]]],
    *,
    max_original_drop: float = MAX_ORIGINAL_DROP,
) -> Comparison:
    """Judge ``new`` against ``current``: each a pair (original, drifted) of probabilities."""
    c_orig, c_drift = accuracy(current[0], labels_original), accuracy(current[1], labels_drifted)
    n_orig, n_drift = accuracy(new[0], labels_original), accuracy(new[1], labels_drifted)
    reasons = []
    if not n_drift > c_drift:
        reasons.append(
            f"not better on the drifted holdout: {n_drift:.4f} vs {c_drift:.4f} for the current"
        )
    # Compare on counts' scale with a hair of slack for float rounding.
    if n_orig < c_orig - max_original_drop - 1e-9:
        reasons.append(
            f"loses {c_orig - n_orig:.4f} on the original holdout "
            f"(allowed {max_original_drop:.4f}): {n_orig:.4f} vs {c_orig:.4f}"
        )
    return Comparison(
        current_original=c_orig,
        new_original=n_orig,
        current_drifted=c_drift,
        new_drifted=n_drift,
        original_rows=int(labels_original.size),
        drifted_rows=int(labels_drifted.size),
        accepted=not reasons,
        reasons=tuple(reasons),
    )


def next_version(existing: Iterable[str], bump: Bump = "minor") -> str:
    """The version after the newest ``X.Y.Z`` label, free along with its ``-float`` parent."""
    taken = set(existing)
    parsed = [tuple(int(p) for p in m.groups()) for v in taken if (m := _SEMVER.fullmatch(v))]
    candidate = (1, 0, 0)
    if parsed:
        major, minor, patch = max(parsed)
        candidate = (major, minor + 1, 0) if bump == "minor" else (major, minor, patch + 1)
    while True:
        label = ".".join(str(p) for p in candidate)
        if label not in taken and f"{label}-float" not in taken:
            return label
        a, b, c = candidate
        candidate = (a, b + 1, 0) if bump == "minor" else (a, b, c + 1)


def rollout_name(model: str, version: str) -> str:
    """``<model>-<version>-retrain``, in the characters a rollout name allows."""
    name = _ROLLOUT_NAME.sub("-", f"{model}-{version}-retrain".lower()).strip("-._")
    return name[:63]


def rollout_document(
    model: str,
    version: str,
    *,
    canary_percent: float,
    approval: bool,
    selector: str | None,
) -> dict[str, Any]:
    """The rollout the job creates (the control plane's YAML/JSON form)."""
    if not 0.0 < canary_percent < 100.0:
        raise ValueError("the canary percentage must be in (0, 100)")
    last: dict[str, Any] = {"percent": 100}
    if approval:
        last["approval"] = True
    spec: dict[str, Any] = {
        "model": model,
        "version": version,
        "waves": [{"percent": canary_percent, "min_devices": 1}, last],
    }
    if selector:
        spec["selector"] = selector
    return {
        "apiVersion": "edgefleet/v1",
        "kind": "Rollout",
        "metadata": {"name": rollout_name(model, version)},
        "spec": spec,
    }


def model_devices(devices: Iterable[dict[str, Any]], model: str) -> tuple[int, list[str]]:
    """(devices running ``model`` or nothing yet, ids of devices running another model)."""
    ours, others = 0, []
    for device in devices:
        installed = device.get("current") or device.get("target")
        running = installed.get("model") if isinstance(installed, dict) else None
        if running in (None, model):
            ours += 1
        else:
            others.append(str(device.get("id")))
    return ours, others


__all__ = [
    "MAX_ORIGINAL_DROP",
    "Comparison",
    "accuracy",
    "compare",
    "model_devices",
    "next_version",
    "rollout_document",
    "rollout_name",
]
