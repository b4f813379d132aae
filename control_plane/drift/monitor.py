"""The drift monitor: every ``drift.check_interval_s``, turn drift into retraining evidence.

Theory of operation. The monitor looks only where a drift policy looks: for
each model with a policy it analyses the whole fleet (policies without a
cohort) and each cohort label the policies name (``site`` or ``site=north``
both split by ``site``; devices without the label are in no cohort of it).
Every release/cohort group whose newest tested window has a drifted feature
becomes a :class:`DriftEvidence` handed to
:meth:`RetrainingService.consider`, which decides: breadth, persistence,
accuracy drop, cooldown, idempotency key. The monitor itself decides nothing
and keeps no state, so every replica may run it; the trigger store makes one
of them fire.

A failing check (a database hiccup, a reference that cannot be read) is
logged and the next interval tries again; it never stops the control plane.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime

from control_plane.drift.service import DriftService, Group, utc
from control_plane.retraining.evidence import DriftedFeature, DriftEvidence
from control_plane.retraining.service import RetrainingService

log = logging.getLogger("edgefleet.drift")


def evidence_of(model: str, group: Group) -> DriftEvidence:
    a = group.analysis
    recent = (
        [w for w in a.windows if w.tested][-a.windows_considered :] if a.windows_considered else []
    )
    # From the first drifted window on: what a retraining job should learn from.
    first = next((w.start for w in recent if w.drifted), a.span_start)
    start = first if first is not None else 0
    end = a.span_end if a.span_end is not None else start
    drifted = [f for f in a.span if f.drifted]
    accuracy = a.accuracy
    cohort = None
    if group.cohort is not None:
        cohort = f"{group.cohort.label}={group.cohort.value or ''}"
    return DriftEvidence(
        model=model,
        release=group.release,
        cohort=cohort,
        window_start=utc(start),
        window_end=utc(end),
        drifted_features=[
            DriftedFeature(
                name=f.name,
                test=f.strongest_test or "combined",
                p_value=f.p if f.p is not None else 1.0,
                q_value=f.q if f.q is not None else 1.0,
                effect=_finite(f.effect),
            )
            for f in drifted
        ],
        share_traffic=a.share_traffic,
        share_devices=a.share_devices,
        windows_drifted=a.windows_drifted,
        windows_considered=a.windows_considered,
        estimated_accuracy=None if accuracy is None else accuracy.value,
        reference_accuracy=a.reference_accuracy,
        accuracy_interval=None if accuracy is None else (accuracy.low, accuracy.high),
        labelled=bool(accuracy and accuracy.labelled),
        details={
            "reference": a.reference,
            "samples": a.samples,
            "devices_tested": a.devices_tested,
            "devices_drifted": a.devices_drifted,
            "persistent_features": list(a.persistent_features),
        },
    )


def _finite(value: float | None) -> float:
    if value is None or math.isnan(value):
        return 0.0
    return max(-1e12, min(1e12, value))


def cohort_labels(policy_cohorts: list[str | None]) -> list[str | None]:
    """What to split by for these policies' cohorts; ``None`` is the whole fleet."""
    labels: list[str | None] = []
    for cohort in policy_cohorts:
        label = None if cohort in (None, "*") else cohort.partition("=")[0]
        if label not in labels:
            labels.append(label)
    return labels


class DriftMonitor:
    def __init__(
        self, drift: DriftService, retraining: RetrainingService, clock: Callable[[], datetime]
    ) -> None:
        self.drift = drift
        self.retraining = retraining
        self.clock = clock

    def check(self) -> int:
        """One pass over every model with a policy; returns how many triggers fired."""
        policies: dict[str, list[str | None]] = {}
        for record in self.retraining.list_policies():
            model = record.model
            policies.setdefault(model, []).append(record.cohort)
        fired = 0
        for model, cohorts in sorted(policies.items()):
            try:
                fired += self._check_model(model, cohort_labels(cohorts))
            except Exception:
                log.exception("drift check of %s failed; trying again next interval", model)
        return fired

    def _check_model(self, model: str, labels: list[str | None]) -> int:
        fired = 0
        for group in self.drift.alarms(model, labels):
            if group.cohort is not None and group.cohort.value is None:
                # Devices without the label belong to no cohort of it (the fleet
                # policies still see them); "site=" would be no cohort a policy names.
                continue
            outcome = self.retraining.consider(evidence_of(model, group), self.clock())
            for policy in outcome.outcomes:
                if policy.fired:
                    fired += 1
                    log.info(
                        "drift of %s release %d triggered %s", model, group.release, policy.policy
                    )
        return fired


__all__ = ["DriftMonitor", "cohort_labels", "evidence_of"]
