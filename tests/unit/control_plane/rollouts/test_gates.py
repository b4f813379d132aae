"""Gates: pass, fail or inconclusive from one wave's evidence, with the numbers that decided.

Tables per gate, then two properties of the install gate over consistent
counts: an early failure is final (however the unfinished devices end, the
gate still fails), and a finished wave is never inconclusive.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control_plane.rollouts.gates import (
    GateResult,
    HealthEvidence,
    NoQualitySource,
    Outcome,
    WaveCounts,
    health_gate,
    install_gate,
)
from control_plane.rollouts.spec import HealthGate, InstallGate

DEFAULT = InstallGate()  # min_success_ratio 0.95, max_failure_ratio 0.05, min_executed 1
LENIENT = InstallGate(min_success_ratio=0.5, max_failure_ratio=0.5, min_executed=1)
SUCCESS_ONLY = InstallGate(min_success_ratio=0.9, max_failure_ratio=1.0, min_executed=1)
MANY = InstallGate(min_executed=10)
P, F, U = Outcome.PASS, Outcome.FAIL, Outcome.INCONCLUSIVE  # U: undecided


def counts(total: int, **kw: int) -> WaveCounts:
    return WaveCounts(total=total, **kw)


INSTALL = {
    "empty wave passes": (DEFAULT, counts(0), P, "the wave has no devices"),
    "all committed": (DEFAULT, counts(20, committed=20), P, "20 of 20 devices committed"),
    "exactly at the threshold": (DEFAULT, counts(20, committed=19, failed=1), P, "19 of 20"),
    "below the threshold": (DEFAULT, counts(20, committed=18, failed=2), F, "2 of 20 devices"),
    "reverts count as failures": (DEFAULT, counts(20, committed=18, reverted=2), F, "2 of 20"),
    "still installing": (DEFAULT, counts(10, committed=5, installing=5), U, "5 of 10 devices"),
    "still pending": (DEFAULT, counts(10, committed=9, pending=1), U, "9 of 10 devices finished"),
    "early failure before the wave finished": (
        DEFAULT, counts(100, committed=1, failed=6, installing=93), F, "6 of 100 devices failed",
    ),
    "early failure by a revert": (DEFAULT, counts(10, reverted=1, pending=9), F, "1 of 10"),
    "failures that still allow a pass": (
        DEFAULT, counts(100, failed=5, installing=95), U, "5 of 100 devices finished",
    ),
    "early failure on the success ratio": (
        SUCCESS_ONLY, counts(10, failed=2, pending=8), F, "2 of 10 devices failed",
    ),
    "lenient gate passes with failures": (LENIENT, counts(10, committed=6, failed=4), P, "6 of 10"),
    "lenient gate fails past its bound": (LENIENT, counts(10, committed=4, failed=6), F, "6 of 10"),
    "min_executed capped by the wave size": (MANY, counts(3, committed=3), P, "3 of 3"),
    "min_executed not reached": (
        MANY, counts(20, committed=8), U, "8 of 20 devices finished",  # 12 unaccounted for
    ),
}  # fmt: skip


@pytest.mark.parametrize(
    ("gate", "wave", "outcome", "detail"), INSTALL.values(), ids=INSTALL.keys()
)
def test_install_gate(gate: InstallGate, wave: WaveCounts, outcome: Outcome, detail: str) -> None:
    result = install_gate(gate, wave)
    assert result.gate == "install"
    assert result.outcome is outcome
    assert detail in result.detail
    # The evidence says what was measured and against what.
    assert {k: result.values[k] for k in wave.to_dict()} == wave.to_dict()
    assert result.values["min_success_ratio"] == gate.min_success_ratio
    assert result.values["max_failure_ratio"] == gate.max_failure_ratio
    assert result.values["min_executed"] == gate.min_executed


def test_install_gate_ratios_in_the_evidence() -> None:
    passed = install_gate(LENIENT, counts(8, committed=6, failed=1, reverted=1))
    assert passed.outcome is P
    assert (passed.values["success_ratio"], passed.values["failure_ratio"]) == (0.75, 0.25)
    early = install_gate(DEFAULT, counts(100, committed=3, failed=6, installing=91))
    assert early.outcome is F
    assert early.values["failure_ratio"] == round(6 / 9, 4)  # of the devices that finished
    assert "success_ratio" not in early.values


def test_wave_counts() -> None:
    wave = WaveCounts(total=10, pending=1, installing=2, committed=3, failed=2, reverted=2)
    assert wave.executed == 7
    assert not wave.finished
    assert WaveCounts(total=2, committed=1, failed=1).finished
    assert wave.to_dict() == {
        "total": 10, "pending": 1, "installing": 2, "committed": 3, "failed": 2, "reverted": 2,
    }  # fmt: skip


@st.composite
def consistent_counts(draw: st.DrawFn) -> WaveCounts:
    parts = {k: draw(st.integers(0, 30)) for k in ("pending", "installing", "committed")}
    parts |= {k: draw(st.integers(0, 5)) for k in ("failed", "reverted")}
    return WaveCounts(total=sum(parts.values()), **parts)


gates = st.builds(
    InstallGate,
    min_success_ratio=st.floats(0, 1),
    max_failure_ratio=st.floats(0, 1),
    min_executed=st.integers(0, 50),
)


@given(gates, consistent_counts())
def test_an_early_failure_is_final(gate: InstallGate, wave: WaveCounts) -> None:
    if install_gate(gate, wave).outcome is not F:
        return
    best = WaveCounts(
        total=wave.total,
        committed=wave.committed + wave.pending + wave.installing,
        failed=wave.failed,
        reverted=wave.reverted,
    )
    assert install_gate(gate, best).outcome is F


@given(gates, consistent_counts())
def test_a_finished_wave_is_never_inconclusive(gate: InstallGate, wave: WaveCounts) -> None:
    outcome = install_gate(gate, wave).outcome
    if wave.finished:
        assert outcome is not U
    else:
        assert outcome is not P


ERRORS_ONLY = HealthGate(max_error_rate=0.01, min_inferences=100)
LATENCY_ONLY = HealthGate(max_p95_latency_ratio=1.5, min_inferences=100)
BOTH = HealthGate(max_error_rate=0.01, max_p95_latency_ratio=1.5, min_inferences=100)


def seen(
    inferences: int, errors: int = 0, p95: float | None = 50.0, before: float | None = 50.0
) -> HealthEvidence:
    return HealthEvidence(inferences, errors, p95, before)


HEALTH = {
    "no telemetry yet": (BOTH, None, U, "no telemetry from the wave yet"),
    "too few inferences": (BOTH, seen(99), U, "99 inferences, 100 needed"),
    "just enough inferences": (BOTH, seen(100), P, "within bounds"),
    "error rate at the bound": (ERRORS_ONLY, seen(1000, errors=10), P, "within bounds"),
    "error rate above": (ERRORS_ONLY, seen(1000, errors=11), F, "error rate 0.0110 > 0.01"),
    "latency ratio at the bound": (LATENCY_ONLY, seen(500, p95=75.0), P, "within bounds"),
    "latency ratio above": (LATENCY_ONLY, seen(500, p95=100.0), F, "p95 latency 2.00x"),
    "no latency baseline": (LATENCY_ONLY, seen(500, before=None), U, "no p95 latency"),
    "no latency of the new release": (LATENCY_ONLY, seen(500, p95=None), U, "no p95 latency"),
    "zero baseline": (LATENCY_ONLY, seen(500, before=0.0), U, "no p95 latency"),
    "latency not gated, none measured": (ERRORS_ONLY, seen(500, p95=None, before=None), P, ""),
    "both breached": (BOTH, seen(1000, errors=50, p95=200.0), F, "error rate 0.0500 > 0.01; p95"),
    "errors fine, baseline missing": (BOTH, seen(1000, errors=1, before=None), U, "no p95"),
    # A breached error rate is a verdict; a missing latency baseline must not hide it.
    "errors breached, baseline missing": (BOTH, seen(1000, errors=50, before=None), F, "0.0500"),
}


@pytest.mark.parametrize(
    ("gate", "evidence", "outcome", "detail"), HEALTH.values(), ids=HEALTH.keys()
)
def test_health_gate(
    gate: HealthGate, evidence: HealthEvidence | None, outcome: Outcome, detail: str
) -> None:
    result = health_gate(gate, evidence)
    assert (result.gate, result.outcome) == ("health", outcome)
    assert detail in result.detail
    assert result.values["max_error_rate"] == gate.max_error_rate
    assert result.values["max_p95_latency_ratio"] == gate.max_p95_latency_ratio
    assert result.values["min_inferences"] == gate.min_inferences
    if evidence is not None:
        assert result.values["inferences"] == evidence.inferences
        assert result.values["errors"] == evidence.errors


def test_health_gate_measured_values() -> None:
    result = health_gate(BOTH, seen(2000, errors=3, p95=66.0, before=60.0))
    assert result.outcome is P
    assert result.values["error_rate"] == 0.0015
    assert result.values["p95_latency_ratio"] == 1.1
    assert (result.values["p95_latency_ms"], result.values["previous_p95_latency_ms"]) == (66, 60)


def test_min_inferences_is_checked_before_any_threshold() -> None:
    # 50 errors in 50 inferences is too few to judge, however bad it looks.
    result = health_gate(ERRORS_ONLY, seen(50, errors=50))
    assert result.outcome is U
    assert "error_rate" not in result.values


def test_no_quality_source_is_always_inconclusive() -> None:
    result = NoQualitySource().evaluate("r1", "sensor", 2, ["d1", "d2"])
    assert (result.gate, result.outcome) == ("quality", U)


def test_gate_result_to_dict() -> None:
    result = GateResult("install", F, "why", {"failed": 3})
    assert result.to_dict() == {
        "gate": "install",
        "outcome": "fail",
        "detail": "why",
        "values": {"failed": 3},
    }
