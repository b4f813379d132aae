"""The rollout health gate's evidence, from agent telemetry.

:class:`TelemetryHealthSource` sums the telemetry windows the wave's devices
sent on the candidate release since the wave opened: inferences, errors and
the latency histogram, whose p95 it reads. The baseline p95 is the same
devices' on the release they ran before (the other release with the most
inferences in the look-back), so a slower device does not make a fast model
look slow. No telemetry yet means no evidence: the gate stays inconclusive.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from control_plane.rollouts.gates import HealthEvidence
from control_plane.store import Store


class TelemetryHealthSource:
    def __init__(
        self,
        store: Store,
        clock: Callable[[], datetime],
        *,
        lookback: timedelta = timedelta(days=1),
    ) -> None:
        self.store = store
        self.clock = clock
        self.lookback = lookback

    def measure(
        self, model: str, release: int, devices: list[str], since: datetime
    ) -> HealthEvidence | None:
        current = self.store.telemetry_by_release(model, since=since, devices=devices).get(release)
        if current is None or current.windows == 0:
            return None
        before = self.store.telemetry_by_release(
            model, since=self.clock() - self.lookback, devices=devices
        )
        others = [a for r, a in before.items() if r != release and a.inferences > 0]
        previous = max(others, key=lambda a: a.inferences, default=None)
        return HealthEvidence(
            inferences=current.inferences + current.errors,
            errors=current.errors,
            p95_latency_ms=current.latency_quantile_ms(0.95) if current.inferences else None,
            previous_p95_latency_ms=None
            if previous is None
            else previous.latency_quantile_ms(0.95),
        )


__all__ = ["TelemetryHealthSource"]
