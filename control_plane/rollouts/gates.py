"""Gates: is a wave good enough to go on? Each answers pass, fail or inconclusive.

Theory of operation (after Argo Rollouts' analysis): a gate looks at the
evidence of one wave and returns a :class:`GateResult` with its outcome, the
measured values and the thresholds, so the audit log can say exactly why a
wave went on or stopped. *Inconclusive* means "not enough evidence yet"; the
engine waits for more, up to the spec's ``inconclusive.timeout``.

* **install**: of the wave's devices that finished (committed, failed,
  reverted, timed out), the share that committed. It fails early, before the
  wave has finished, once so many devices failed that the wave can no longer
  pass.
* **health**: inference error rate, and p95 latency relative to the previous
  release on the same devices, from agent telemetry (:class:`HealthEvidence`).
  No telemetry yet: inconclusive.
* **quality**: a pluggable source (:class:`QualitySource`) compares the new
  release's outputs with the previous release's. Until one is configured the
  gate is inconclusive; its mode decides whether a failure pauses, reverts or
  is only observed.

Pure: no I/O; sources are called by the driver, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Protocol

from control_plane.rollouts.spec import HealthGate, InstallGate


class Outcome(str, Enum):
    PASS = "pass"  # noqa: S105 - an outcome, not a password
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class GateResult:
    gate: str
    outcome: Outcome
    detail: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "outcome": self.outcome.value,
            "detail": self.detail,
            "values": dict(self.values),
        }


@dataclass(frozen=True)
class WaveCounts:
    """Where the devices of one wave stand."""

    total: int = 0
    pending: int = 0  # not assigned yet
    installing: int = 0  # assigned, no outcome yet
    committed: int = 0
    failed: int = 0  # failed, rejected or timed out
    reverted: int = 0  # the agent reverted during probation

    @property
    def executed(self) -> int:
        return self.committed + self.failed + self.reverted

    @property
    def finished(self) -> bool:
        return self.pending == 0 and self.installing == 0

    def to_dict(self) -> dict[str, int]:
        return {
            "total": self.total,
            "pending": self.pending,
            "installing": self.installing,
            "committed": self.committed,
            "failed": self.failed,
            "reverted": self.reverted,
        }


@dataclass(frozen=True)
class HealthEvidence:
    """Telemetry of the wave's devices on the new release, against the previous one."""

    inferences: int
    errors: int
    p95_latency_ms: float | None
    previous_p95_latency_ms: float | None


class HealthSource(Protocol):
    """Inference health of a wave's devices from agent telemetry."""

    def measure(
        self, model: str, release: int, devices: list[str], since: datetime
    ) -> HealthEvidence | None: ...


class NoHealthSource:
    """A health source without evidence (tests, or no telemetry): always inconclusive."""

    def measure(
        self, model: str, release: int, devices: list[str], since: datetime
    ) -> HealthEvidence | None:
        return None


class QualitySource(Protocol):
    """Compares the new release's outputs with the previous release's on a wave."""

    def evaluate(
        self, rollout_id: str, model: str, release: int, devices: list[str]
    ) -> GateResult: ...


class NoQualitySource:
    """A quality source without evidence (tests, or no drift analysis): always inconclusive."""

    def evaluate(self, rollout_id: str, model: str, release: int, devices: list[str]) -> GateResult:
        return GateResult("quality", Outcome.INCONCLUSIVE, "no output-drift data is collected yet")


def install_gate(spec: InstallGate, counts: WaveCounts) -> GateResult:
    values: dict[str, Any] = {
        **counts.to_dict(),
        "min_success_ratio": spec.min_success_ratio,
        "max_failure_ratio": spec.max_failure_ratio,
        "min_executed": spec.min_executed,
    }
    if counts.total == 0:
        return GateResult("install", Outcome.PASS, "the wave has no devices", values)
    bad = counts.failed + counts.reverted
    # Failures that would break the gate even if every other device committed.
    worst_ratio = bad / counts.total
    if worst_ratio > spec.max_failure_ratio or (counts.total - bad) / counts.total < (
        spec.min_success_ratio
    ):
        values["failure_ratio"] = round(bad / max(counts.executed, 1), 4)
        return GateResult(
            "install",
            Outcome.FAIL,
            f"{bad} of {counts.total} devices failed (failure ratio above "
            f"{spec.max_failure_ratio:g} or success ratio below {spec.min_success_ratio:g})",
            values,
        )
    needed = min(spec.min_executed, counts.total)
    if not counts.finished or counts.executed < needed:
        return GateResult(
            "install",
            Outcome.INCONCLUSIVE,
            f"{counts.executed} of {counts.total} devices finished",
            values,
        )
    success = counts.committed / counts.executed if counts.executed else 1.0
    failure = bad / counts.executed if counts.executed else 0.0
    values.update(success_ratio=round(success, 4), failure_ratio=round(failure, 4))
    if success < spec.min_success_ratio or failure > spec.max_failure_ratio:
        return GateResult(
            "install",
            Outcome.FAIL,
            f"success ratio {success:.3f} (min {spec.min_success_ratio:g}), "
            f"failure ratio {failure:.3f} (max {spec.max_failure_ratio:g})",
            values,
        )
    return GateResult(
        "install",
        Outcome.PASS,
        f"{counts.committed} of {counts.executed} devices committed",
        values,
    )


def health_gate(spec: HealthGate, evidence: HealthEvidence | None) -> GateResult:
    values: dict[str, Any] = {
        "max_error_rate": spec.max_error_rate,
        "max_p95_latency_ratio": spec.max_p95_latency_ratio,
        "min_inferences": spec.min_inferences,
    }
    if evidence is None:
        return GateResult("health", Outcome.INCONCLUSIVE, "no telemetry from the wave yet", values)
    values.update(
        inferences=evidence.inferences,
        errors=evidence.errors,
        p95_latency_ms=evidence.p95_latency_ms,
        previous_p95_latency_ms=evidence.previous_p95_latency_ms,
    )
    if evidence.inferences < spec.min_inferences:
        return GateResult(
            "health",
            Outcome.INCONCLUSIVE,
            f"{evidence.inferences} inferences, {spec.min_inferences} needed",
            values,
        )
    problems = []
    if spec.max_error_rate is not None:
        rate = evidence.errors / evidence.inferences
        values["error_rate"] = round(rate, 6)
        if rate > spec.max_error_rate:
            problems.append(f"error rate {rate:.4f} > {spec.max_error_rate:g}")
    if spec.max_p95_latency_ratio is not None:
        now, before = evidence.p95_latency_ms, evidence.previous_p95_latency_ms
        if now is None or before is None or before <= 0:
            # A breached error rate is a verdict already; a missing baseline must not hide it.
            if not problems:
                return GateResult(
                    "health", Outcome.INCONCLUSIVE, "no p95 latency of both releases yet", values
                )
        else:
            ratio = now / before
            values["p95_latency_ratio"] = round(ratio, 4)
            if ratio > spec.max_p95_latency_ratio:
                problems.append(f"p95 latency {ratio:.2f}x the previous release's")
    if problems:
        return GateResult("health", Outcome.FAIL, "; ".join(problems), values)
    return GateResult("health", Outcome.PASS, "error rate and latency within bounds", values)


__all__ = [
    "GateResult",
    "HealthEvidence",
    "HealthSource",
    "NoHealthSource",
    "NoQualitySource",
    "Outcome",
    "QualitySource",
    "WaveCounts",
    "health_gate",
    "install_gate",
]
