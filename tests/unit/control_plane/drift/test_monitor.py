"""The drift monitor: alarms of the real drift service become retraining evidence."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import cast

import pytest

from control_plane.drift.monitor import DriftMonitor, cohort_labels
from control_plane.retraining.decision import Reason
from control_plane.retraining.evidence import DriftEvidence
from control_plane.retraining.service import PolicyOutcome, RetrainingService, TriggerOutcome
from fleetcore.drift.summary import DriftSummary
from tests.unit.control_plane.drift.support import (
    MODEL,
    REFERENCE,
    START,
    WINDOW_S,
    FakeStore,
    device,
    device_summaries,
    drift_service,
)

NOW = datetime.fromtimestamp(START + 7 * WINDOW_S, timezone.utc)
NORTH = [device(0), device(1)]
SOUTH = [device(2), device(3)]


@dataclass
class _Policy:
    model: str
    cohort: str | None


@dataclass
class FakeRetraining:
    """Records every piece of evidence; says each policy fired (or not, when ``fire`` is off)."""

    policies: list[_Policy]
    fire: bool = True
    seen: list[tuple[DriftEvidence, datetime]] = field(default_factory=list)

    def list_policies(self, model: str | None = None) -> list[_Policy]:
        return [p for p in self.policies if model in (None, p.model)]

    def consider(self, evidence: DriftEvidence, now: datetime) -> TriggerOutcome:
        self.seen.append((evidence, now))
        reason = Reason.FIRED if self.fire else Reason.COOLDOWN
        outcome = PolicyOutcome("p", self.fire, reason, "")
        return TriggerOutcome(evidence.model, evidence.cohort, (outcome,))


def _store(*, shifted: list[str], unlabelled: bool = False) -> FakeStore:
    summaries: list[DriftSummary] = []
    for i, name in enumerate(NORTH + SOUTH):
        shift = {1: 0.5, 3: -0.6} if name in shifted else None
        summaries += device_summaries(REFERENCE, name, 6, 120, seed=40 + i, shift=shift)
    labels = {name: {"site": "north"} for name in NORTH} | {
        name: {"site": "south"} for name in SOUTH
    }
    if unlabelled:
        labels[device(3)] = {}
    return FakeStore(references={1: REFERENCE}, labels=labels, summaries=summaries)


def _monitor(store: FakeStore, retraining: FakeRetraining) -> DriftMonitor:
    # Just after the last window: the monitor reads only what persistence can use.
    drift = drift_service(store, now=NOW)
    return DriftMonitor(drift, cast(RetrainingService, retraining), drift.clock)


def test_policy_cohorts_name_what_to_split_by() -> None:
    assert cohort_labels([None]) == [None]
    assert cohort_labels(["*"]) == [None]
    assert cohort_labels(["site", "site=north", None, "hw=rpi4", "*"]) == ["site", None, "hw"]


def test_a_drifted_cohort_becomes_evidence_for_site_equals_south() -> None:
    retraining = FakeRetraining([_Policy(MODEL, "site")])
    fired = _monitor(_store(shifted=SOUTH), retraining).check()
    assert fired == 1
    ((evidence, now),) = retraining.seen
    assert now == NOW
    assert evidence.model == MODEL and evidence.release == 1
    assert evidence.cohort == "site=south"
    assert sorted(f.name for f in evidence.drifted_features) == ["f1", "f3"]
    for feature in evidence.drifted_features:
        assert feature.test in ("chi2", "ks", "mean", "variance")
        assert 0.0 <= feature.p_value <= feature.q_value < 1e-4
    (f1,) = [f for f in evidence.drifted_features if f.name == "f1"]
    assert f1.effect != 0.0
    # Within the south cohort both devices drift: all of its devices and traffic.
    assert evidence.share_devices == 1.0 and evidence.share_traffic == 1.0
    assert (evidence.windows_drifted, evidence.windows_considered) == (4, 4)
    assert evidence.window_start == datetime.fromtimestamp(START + 2 * WINDOW_S, timezone.utc)
    assert evidence.window_end == datetime.fromtimestamp(START + 6 * WINDOW_S, timezone.utc)
    assert evidence.reference_accuracy is not None and evidence.estimated_accuracy is not None
    assert evidence.accuracy_interval is not None
    low, high = evidence.accuracy_interval
    assert 0.0 <= low <= evidence.estimated_accuracy <= high <= 1.0
    assert evidence.labelled is False
    assert evidence.details["devices_tested"] == 2
    assert evidence.details["reference"] == REFERENCE.digest()
    assert evidence.details["samples"] == 2 * 4 * 120
    # It is valid evidence for the retraining API too (round trip through its JSON).
    assert DriftEvidence.from_dict(evidence.to_dict()) == evidence


def test_fleet_policies_get_fleet_evidence_with_its_breadth() -> None:
    for cohort in (None, "*"):
        retraining = FakeRetraining([_Policy(MODEL, cohort)])
        _monitor(_store(shifted=SOUTH), retraining).check()
        ((evidence, _),) = retraining.seen
        assert evidence.cohort is None
        assert evidence.share_devices == 0.5 and evidence.share_traffic == 0.5
        assert evidence.details["devices_tested"] == 4


def test_one_cohort_policy_splits_by_its_label_and_retraining_picks_the_match() -> None:
    retraining = FakeRetraining([_Policy(MODEL, "site=north"), _Policy(MODEL, None)])
    _monitor(_store(shifted=SOUTH), retraining).check()
    assert sorted(str(e.cohort) for e, _ in retraining.seen) == ["None", "site=south"]


def test_no_drift_hands_nothing_over() -> None:
    retraining = FakeRetraining([_Policy(MODEL, "site"), _Policy(MODEL, None)])
    assert _monitor(_store(shifted=[]), retraining).check() == 0
    assert retraining.seen == []


def test_models_without_a_policy_are_not_analysed_and_skipped_triggers_count_zero() -> None:
    assert _monitor(_store(shifted=SOUTH), FakeRetraining([])).check() == 0
    retraining = FakeRetraining([_Policy(MODEL, None)], fire=False)
    assert _monitor(_store(shifted=SOUTH), retraining).check() == 0
    assert len(retraining.seen) == 1


def test_a_failing_model_is_logged_and_the_others_still_checked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    retraining = FakeRetraining([_Policy("gone", None), _Policy(MODEL, None)])
    with caplog.at_level(logging.ERROR, "edgefleet.drift"):
        assert _monitor(_store(shifted=SOUTH), retraining).check() == 1
    assert "drift check of gone failed" in caplog.text
    assert [e.model for e, _ in retraining.seen] == [MODEL]


def test_devices_without_the_label_are_not_a_cohort_of_their_own() -> None:
    retraining = FakeRetraining([_Policy(MODEL, "site"), _Policy(MODEL, None)])
    _monitor(_store(shifted=[device(3)], unlabelled=True), retraining).check()
    # The drifting device has no site: the fleet policy sees it, no site cohort does.
    assert [e.cohort for e, _ in retraining.seen] == [None]
    assert retraining.seen[0][0].share_devices == 0.25
