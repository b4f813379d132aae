"""The rollout quality gate's evidence: a candidate's outputs against the previous release's.

Theory of operation. For the devices of a wave, :class:`DriftQualitySource`
merges the drift summaries they sent on the candidate release and, as the
baseline, those they sent on the release they ran before (the one with the
most samples among the other releases in the look-back), and compares the
predicted-class mix and the confidence (max-probability histogram) with
:func:`fleetcore.drift.detect.test_outputs`. Same devices, same time of day,
so a difference is the model's, not the cohort's. Without a baseline (new
devices, a previous release with other classes, or one that aged out of the
look-back) the candidate is compared with its own signed reference outputs,
and the detail says so.

Outcomes: too few candidate outputs, or a test that cannot be formed yet, is
*inconclusive* (the engine waits, up to the spec's limit); a significant and
material difference *fails*; otherwise the gate *passes*. The values carry
sample counts, p-values and effect sizes for the audit log.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import numpy as np

from control_plane.drift.analysis import Window, merge_windows
from control_plane.drift.service import DriftService
from control_plane.rollouts.gates import GateResult, Outcome
from fleetcore.drift.detect import DetectionPolicy, test_outputs

GATE = "quality"


class DriftQualitySource:
    def __init__(
        self,
        drift: DriftService,
        clock: Callable[[], datetime],
        *,
        min_samples: int = 500,
        lookback: timedelta = timedelta(days=1),
        policy: DetectionPolicy | None = None,
    ) -> None:
        self.drift = drift
        self.clock = clock
        self.min_samples = min_samples
        self.lookback = lookback
        self.policy = policy or DetectionPolicy()

    def evaluate(self, rollout_id: str, model: str, release: int, devices: list[str]) -> GateResult:
        wanted = set(devices)
        windows = [
            w
            for w in self.drift.windows(model, release=None, since=self.clock() - self.lookback)
            if w.device in wanted
        ]
        candidate = [w for w in windows if w.release == release]
        values: dict[str, object] = {"min_samples": self.min_samples, "release": release}
        live = merge_windows(candidate) if candidate else None
        values["samples"] = 0 if live is None else live.n
        if live is None or live.n < self.min_samples:
            return GateResult(
                GATE,
                Outcome.INCONCLUSIVE,
                f"{values['samples']} outputs of release {release} on the wave's devices, "
                f"{self.min_samples} needed",
                values,
            )
        base_classes, base_hists, against = self._baseline(model, release, windows, live.n_classes)
        if base_classes is None or base_hists is None:
            return GateResult(
                GATE, Outcome.INCONCLUSIVE, "no baseline outputs to compare with", values
            )
        values["baseline"] = against
        result = test_outputs(
            base_classes, base_hists, live.class_counts, live.histograms, self.policy
        )
        values.update(result.to_dict())
        if not result.testable:
            return GateResult(
                GATE, Outcome.INCONCLUSIVE, f"not testable yet: {result.reason}", values
            )
        if result.drifted:
            shift = result.confidence_shift
            detail = (
                f"outputs of release {release} differ from {against}: class mix p="
                f"{_p(result.p_classes)}, confidence shift "
                f"{'n/a' if shift is None else f'{shift:+.3f}'}"
            )
            return GateResult(GATE, Outcome.FAIL, detail, values)
        return GateResult(
            GATE, Outcome.PASS, f"outputs of release {release} match {against}", values
        )

    def _baseline(
        self, model: str, release: int, windows: Sequence[Window], classes: int
    ) -> tuple[np.ndarray | None, np.ndarray | None, str]:
        by_release: dict[int, list[Window]] = {}
        for window in windows:
            # A release with other classes (a version that added one) has no comparable outputs.
            if window.release != release and window.body.n_classes == classes:
                by_release.setdefault(window.release, []).append(window)
        if by_release:
            best = max(by_release, key=lambda r: sum(w.body.n for w in by_release[r]))
            merged = merge_windows(by_release[best])
            if merged.n >= self.min_samples:
                return merged.class_counts, merged.histograms, f"release {best} on the same devices"
        reference = self.drift.reference(model, release)
        if reference is None:
            return None, None, ""
        out = reference.output
        hists = np.array([out.histograms()[name].counts for name in out.histograms()])
        return np.array(out.class_counts), hists, f"release {release}'s reference outputs"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2g}"


__all__ = ["DriftQualitySource"]
