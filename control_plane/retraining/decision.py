"""Whether a policy fires on a piece of evidence: the pure decision.

Theory of operation: :func:`decide` checks, in this order, that the drift is
broad enough (share of traffic and of devices), persistent enough (at least
``windows`` of the last ``of`` windows drifted), costly enough (estimated
accuracy at least ``min_accuracy_drop`` points below the reference), and that
the policy is out of its cooldown. The first check that fails is the reason
in the result; the idempotency key check happens before, in the service,
because it needs the store. Reads no clock: ``now`` is an argument.

Persistence from totals: the evidence says how many of the windows it
considered drifted, not which. When it considered more windows than the
policy's ``of``, the decision assumes the drifted ones were the oldest (a
lower bound), so "3 of 4" never passes on 3 drifted windows out of 10.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from control_plane.retraining.evidence import DriftEvidence
from control_plane.retraining.policy import DriftPolicy


class Reason(str, Enum):
    FIRED = "fired"
    NO_POLICY = "no_policy"
    NOT_BROAD = "not_broad_enough"
    NOT_PERSISTENT = "not_persistent"
    SMALL_DROP = "accuracy_drop_below_min"
    COOLDOWN = "in_cooldown"
    ALREADY_FIRED = "already_fired"


@dataclass(frozen=True)
class Decision:
    fire: bool
    reason: Reason
    detail: str
    cooldown_until: datetime | None = None


def drifted_in_last(evidence: DriftEvidence, of: int) -> int:
    """Drifted windows among the last ``of`` considered, at the least."""
    outside = max(0, evidence.windows_considered - of)
    return max(0, evidence.windows_drifted - outside)


def decide(  # noqa: PLR0911 - one return per check, in order
    policy: DriftPolicy, evidence: DriftEvidence, last_fired: datetime | None, now: datetime
) -> Decision:
    """The policy's verdict on ``evidence``, given when it last fired (``None``: never)."""
    if policy.min_share_traffic is not None and evidence.share_traffic < policy.min_share_traffic:
        return Decision(
            False,
            Reason.NOT_BROAD,
            f"{evidence.share_traffic:.1%} of traffic drifted, "
            f"policy needs {policy.min_share_traffic:.1%}",
        )
    if policy.min_share_devices is not None and evidence.share_devices < policy.min_share_devices:
        return Decision(
            False,
            Reason.NOT_BROAD,
            f"{evidence.share_devices:.1%} of devices drifted, "
            f"policy needs {policy.min_share_devices:.1%}",
        )
    recent = drifted_in_last(evidence, policy.persistence_of)
    if recent < policy.persistence_windows:
        return Decision(
            False,
            Reason.NOT_PERSISTENT,
            f"{evidence.windows_drifted} of {evidence.windows_considered} windows drifted "
            f"(at least {recent} of the last {policy.persistence_of}); policy needs "
            f"{policy.persistence_windows} of {policy.persistence_of}",
        )
    if policy.min_accuracy_drop is not None:
        drop = evidence.accuracy_drop_points
        if drop is None:
            return Decision(
                False, Reason.SMALL_DROP, "no accuracy estimate; policy needs a minimum drop"
            )
        if drop < policy.min_accuracy_drop:
            return Decision(
                False,
                Reason.SMALL_DROP,
                f"estimated accuracy {drop:.2f} points below the reference, "
                f"policy needs {policy.min_accuracy_drop:g}",
            )
    if last_fired is not None:
        until = last_fired + timedelta(seconds=policy.cooldown_s)
        if now < until:
            return Decision(
                False,
                Reason.COOLDOWN,
                f"last fired at {last_fired.isoformat()}; in cooldown until {until.isoformat()}",
                cooldown_until=until,
            )
    return Decision(True, Reason.FIRED, "broad, persistent and costly enough")


__all__ = ["Decision", "Reason", "decide", "drifted_in_last"]
