"""Retraining triggers: drift policies, the evidence they judge, and the actions they fire.

See :mod:`control_plane.retraining.service` for the flow and docs/retraining.md
for the policy reference.
"""

from control_plane.retraining.decision import Reason
from control_plane.retraining.evidence import DriftedFeature, DriftEvidence
from control_plane.retraining.policy import DriftPolicy, parse_policy
from control_plane.retraining.service import (
    AppliedPolicy,
    PolicyOutcome,
    RetrainingService,
    TriggerOutcome,
)
from control_plane.retraining.wiring import build_retraining

__all__ = [
    "AppliedPolicy",
    "DriftEvidence",
    "DriftPolicy",
    "DriftedFeature",
    "PolicyOutcome",
    "Reason",
    "RetrainingService",
    "TriggerOutcome",
    "build_retraining",
    "parse_policy",
]
