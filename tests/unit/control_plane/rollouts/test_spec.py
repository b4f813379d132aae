"""The rollout spec: a YAML document in, a frozen RolloutSpec out, or an error naming the field.

Documents are written as YAML text and decoded with ``yaml.safe_load``, as
``fleetctl apply`` does, so YAML's own typing (``10%`` a string, ``1.1.0`` a
string, ``true`` a bool) is part of what is tested.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import pytest
import yaml

from control_plane.errors import InvalidInputError
from control_plane.rollouts.selector import Op, Requirement, Selector, parse_selector
from control_plane.rollouts.spec import (
    AfterInconclusive,
    Gates,
    HealthGate,
    InstallGate,
    OnFailure,
    QualityGate,
    QualityMode,
    RolloutSpec,
    Wave,
    duration_s,
    parse_spec,
    spec_to_dict,
)

FULL = """
apiVersion: edgefleet/v1
kind: Rollout
metadata:
  name: sensor-1.1.0
  labels: {team: vision}
spec:
  model: sensor
  version: 1.1.0
  selector: "site in (b,a), hw=rpi4, !legacy"
  stratify_by: site
  waves:
    - {percent: 10, min_devices: 2, soak: 10m}
    - count: 40
      approval: true
      gates: {install: {min_executed: 5}, inconclusive: {then: fail}}
    - {percent: 100, soak: 1.5h}
  rate_per_minute: 600
  device_timeout: 30m
  retries: 1
  max_unavailable: 10%
  gates:
    install: {min_success_ratio: 0.9, max_failure_ratio: 0.1, min_executed: 2}
    health: {max_error_rate: 0.01, max_p95_latency_ratio: 1.5, min_inferences: 200}
    quality: {mode: observe}
    inconclusive: {timeout: 15m, then: pass}
  on_failure: revert_wave
  dry_run: true
  paused: true
"""

FULL_GATES = Gates(
    install=InstallGate(min_success_ratio=0.9, max_failure_ratio=0.1, min_executed=2),
    health=HealthGate(max_error_rate=0.01, max_p95_latency_ratio=1.5, min_inferences=200),
    quality=QualityGate(QualityMode.OBSERVE),
    inconclusive_timeout_s=900.0,
    after_inconclusive=AfterInconclusive.PASS,
)

FULL_SPEC = RolloutSpec(
    name="sensor-1.1.0",
    model="sensor",
    version="1.1.0",
    selector=Selector(
        (
            Requirement("site", Op.IN, frozenset({"a", "b"})),
            Requirement("hw", Op.IN, frozenset({"rpi4"})),
            Requirement("legacy", Op.ABSENT),
        )
    ),
    waves=(
        Wave(percent=10.0, min_devices=2, soak_s=600.0),
        Wave(
            count=40,
            approval=True,
            # Wave gates start from the rollout's and override field by field.
            gates=replace(
                FULL_GATES,
                install=InstallGate(0.9, 0.1, 5),
                after_inconclusive=AfterInconclusive.FAIL,
            ),
        ),
        Wave(percent=100.0, soak_s=5400.0),
    ),
    stratify_by="site",
    rate_per_minute=600.0,
    device_timeout_s=1800.0,
    retries=1,
    max_unavailable_percent=10.0,
    gates=FULL_GATES,
    on_failure=OnFailure.REVERT_WAVE,
    dry_run=True,
    paused=True,
)


def doc(text: str = FULL) -> dict[str, Any]:
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded


def minimal(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "r1"}, "spec": {"model": "sensor", "release": 2, **spec}}


def refused(document: Any) -> str:
    with pytest.raises(InvalidInputError) as caught:
        parse_spec(document)
    return str(caught.value)


def test_the_full_document_parses_to_the_expected_spec() -> None:
    spec = parse_spec(doc())
    assert spec == FULL_SPEC
    assert spec.gates_of(0) is spec.gates
    assert spec.gates_of(1).install.min_executed == 5
    assert spec.gates_of(2) == FULL_GATES


def test_defaults() -> None:
    spec = parse_spec(minimal())
    assert spec == RolloutSpec(name="r1", model="sensor", release=2)
    assert spec.waves == (Wave(percent=100.0, min_devices=1, soak_s=0.0, approval=False),)
    assert spec.gates == Gates(
        install=InstallGate(0.95, 0.05, 1),
        health=None,
        quality=QualityGate(QualityMode.OFF),
        inconclusive_timeout_s=900.0,
        after_inconclusive=AfterInconclusive.PAUSE,
    )
    assert (spec.selector, spec.version, spec.stratify_by) == (Selector(), None, None)
    assert (spec.device_timeout_s, spec.retries, spec.on_failure) == (1800.0, 0, OnFailure.PAUSE)
    assert (spec.dry_run, spec.paused, spec.rate_per_minute) == (False, False, None)
    assert spec.unavailable_cap(1000) is None


def test_a_health_gate_keeps_defaults_for_fields_not_given() -> None:
    spec = parse_spec(minimal(gates={"health": {"max_p95_latency_ratio": 2}}))
    assert spec.gates.health == HealthGate(None, 2.0, 100)


def test_wave_gates_inherit_the_rollout_gates_field_by_field() -> None:
    gates = {"install": {"min_success_ratio": 0.8}, "health": {"max_error_rate": 0.02}}
    waves = [{"percent": 5, "gates": {"install": {"min_executed": 3}}}, {"percent": 100}]
    spec = parse_spec(minimal(gates=gates, waves=waves))
    assert spec.waves[0].gates == replace(spec.gates, install=InstallGate(0.8, 0.05, 3))
    assert spec.waves[1].gates is None
    assert spec.gates_of(1) == spec.gates


def _with(path: str, key: str, value: Any) -> dict[str, Any]:
    """The full document with ``value`` set at ``path`` (dots, [i] for list items)."""
    document = copy.deepcopy(doc())
    node: Any = document
    for part in path.split(".") if path else []:
        name, _, index = part.partition("[")
        node = node[name]
        if index:
            node = node[int(index.rstrip("]"))]
    node[key] = value
    return document


UNKNOWN = {
    "top level": ("", "specs", "rollout: unknown field(s) specs"),
    "metadata": ("metadata", "nmae", "metadata: unknown field(s) nmae"),
    "spec": ("spec", "on_failures", "spec: unknown field(s) on_failures"),
    "wave": ("spec.waves[0]", "sok", "spec.waves[0]: unknown field(s) sok"),
    "gates": ("spec.gates", "heath", "spec.gates: unknown field(s) heath"),
    "install gate": ("spec.gates.install", "min_sucess", "spec.gates.install: unknown field(s)"),
    "health gate": ("spec.gates.health", "p99", "spec.gates.health: unknown field(s) p99"),
    "quality gate": ("spec.gates.quality", "mod", "spec.gates.quality: unknown field(s) mod"),
    "inconclusive": ("spec.gates.inconclusive", "after", "spec.gates.inconclusive: unknown"),
    "wave gates": ("spec.waves[1].gates", "qa", "spec.waves[1].gates: unknown field(s) qa"),
    "wave install": ("spec.waves[1].gates.install", "x", "spec.waves[1].gates.install: unknown"),
}


@pytest.mark.parametrize(("path", "key", "fragment"), UNKNOWN.values(), ids=UNKNOWN.keys())
def test_unknown_fields_are_refused_by_name(path: str, key: str, fragment: str) -> None:
    message = refused(_with(path, key, 1))
    assert fragment in message
    assert key in message


GOOD_DURATIONS = [
    (90, 90.0), (2.5, 2.5), (0, 0.0), ("90s", 90.0), ("90", 90.0), ("15m", 900.0),
    ("2h", 7200.0), ("1d", 86_400.0), ("250ms", 0.25), ("1.5h", 5400.0), (" 10m ", 600.0),
    ("365d", 365 * 86_400.0),
]  # fmt: skip


@pytest.mark.parametrize(("value", "seconds"), GOOD_DURATIONS)
def test_durations(value: Any, seconds: float) -> None:
    assert duration_s(value, "x") == seconds


BAD_DURATIONS = [
    "10 m", "-5s", -1, True, "1e3s", "", "10x", "m", "366d", 366 * 86_400 + 1,
    float("inf"), float("nan"), None, [10],
]  # fmt: skip


@pytest.mark.parametrize("value", BAD_DURATIONS, ids=repr)
def test_bad_durations_are_refused_naming_the_field(value: Any) -> None:
    with pytest.raises(InvalidInputError, match=r"^spec\.waves\[0\]\.soak: "):
        duration_s(value, "spec.waves[0].soak")


def test_a_bad_duration_in_a_document_names_its_field() -> None:
    assert refused(_with("spec.waves[2]", "soak", "soon")).startswith("spec.waves[2].soak: 'soon'")
    assert "spec.gates.inconclusive.timeout" in refused(
        _with("spec.gates.inconclusive", "timeout", "-1m")
    )
    assert "at least 1s" in refused(minimal(device_timeout="500ms"))


WAVES = {
    "percent goes down": (
        [{"percent": 50}, {"percent": 10}, {"percent": 100}],
        "spec.waves[1]: percent is cumulative",
    ),
    "count goes down": (
        [{"count": 5}, {"count": 3}, {"percent": 100}],
        "spec.waves[1]: count is cumulative",
    ),
    "last wave short of 100": (
        [{"percent": 10}, {"percent": 90}],
        "last wave must be percent: 100",
    ),
    "last wave by count": ([{"percent": 10}, {"count": 50}], "last wave must be percent: 100"),
    "percent and count": ([{"percent": 100, "count": 3}], "spec.waves[0]: give percent or count"),
    "neither": ([{"percent": 10}, {"soak": "1m"}], "spec.waves[1]: give percent or count"),
    "percent above 100": ([{"percent": 101}], "spec.waves[0].percent: 101 is not between"),
    "count zero": ([{"count": 0}, {"percent": 100}], "spec.waves[0].count: 0 is not between"),
    "no waves": ([], "spec.waves must be a list of 1 to 20"),
    "not a list": ({"percent": 100}, "spec.waves must be a list"),
    "too many": ([{"percent": 100}] * 21, "spec.waves must be a list of 1 to 20"),
    "wave not a mapping": ([10, {"percent": 100}], "spec.waves[0] must be a mapping"),
}


@pytest.mark.parametrize(("waves", "fragment"), WAVES.values(), ids=WAVES.keys())
def test_bad_waves(waves: Any, fragment: str) -> None:
    assert fragment in refused(minimal(waves=waves))


def test_waves_may_repeat_a_target_and_mix_percent_and_count() -> None:
    waves = [{"count": 3}, {"count": 3}, {"percent": 20}, {"percent": 20}, {"percent": 100}]
    spec = parse_spec(minimal(waves=waves))
    assert [(w.count, w.percent) for w in spec.waves] == [
        (3, None), (3, None), (None, 20.0), (None, 20.0), (None, 100.0),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "count", "percent"),
    [(5, 5, None), ("10%", None, 10.0), (" 12.5% ", None, 12.5), ("100%", None, 100.0)],
)
def test_max_unavailable(value: Any, count: int | None, percent: float | None) -> None:
    spec = parse_spec(minimal(max_unavailable=value))
    assert (spec.max_unavailable, spec.max_unavailable_percent) == (count, percent)


@pytest.mark.parametrize("value", [0, -1, "0%", "101%", "x%", "%", "5", True, 2.5, "nan%"])
def test_bad_max_unavailable(value: Any) -> None:
    assert refused(minimal(max_unavailable=value)).startswith("spec.max_unavailable: ")


@pytest.mark.parametrize(
    ("count", "percent", "total", "cap"),
    [(5, None, 100, 5), (None, 10.0, 100, 10), (None, 10.0, 5, 1), (None, 25.0, 10, 2),
     (3, 10.0, 100, 3), (30, 10.0, 100, 10)],
)  # fmt: skip
def test_unavailable_cap(count: int | None, percent: float | None, total: int, cap: int) -> None:
    spec = RolloutSpec("r", "m", release=1, max_unavailable=count, max_unavailable_percent=percent)
    assert spec.unavailable_cap(total) == cap


OTHER_ERRORS = {
    "version and release": (minimal(version="1.0"), "by version or by release"),
    "neither version nor release": ({"metadata": {"name": "r"}, "spec": {"model": "m"}}, "by ver"),
    "api version": ({**minimal(), "apiVersion": "edgefleet/v2"}, "apiVersion 'edgefleet/v2'"),
    "kind": ({**minimal(), "kind": "Deployment"}, "kind 'Deployment' is not Rollout"),
    "no name": ({"spec": {"model": "m", "release": 1}}, "metadata.name is required"),
    "bad name": ({**minimal(), "metadata": {"name": "Bad Name"}}, "metadata.name: 'Bad Name'"),
    "no model": ({"metadata": {"name": "r"}, "spec": {"release": 1}}, "spec.model is required"),
    "no spec": ({"metadata": {"name": "r"}}, "spec must be a mapping"),
    "not a mapping": (["spec"], "rollout must be a mapping"),
    "selector not a string": (minimal(selector=["a"]), "spec.selector must be a string"),
    "bad selector term": (minimal(selector="hw=x, Bad"), "'Bad' is not a label key"),
    "bad stratify_by": (minimal(stratify_by="Site"), "spec.stratify_by: 'Site'"),
    "release zero": (minimal(release=0), "spec.release: 0 is not between"),
    "retries a string": (minimal(retries="1"), "spec.retries: '1' is not a whole number"),
    "retries above 10": (minimal(retries=11), "spec.retries: 11 is not between"),
    "rate a bool": (minimal(rate_per_minute=True), "spec.rate_per_minute: True is not a number"),
    "dry_run a string": (minimal(dry_run="yes"), "spec.dry_run: 'yes' is not true or false"),
    "on_failure": (minimal(on_failure="explode"), "spec.on_failure: 'explode' is not pause | rev"),
    "health without a threshold": (
        minimal(gates={"health": {"min_inferences": 10}}),
        "spec.gates.health: set max_error_rate, max_p95_latency_ratio or both",
    ),
    "ratio above 1": (
        minimal(gates={"install": {"min_success_ratio": 1.5}}),
        "spec.gates.install.min_success_ratio: 1.5 is not between",
    ),
    "quality mode": (minimal(gates={"quality": {"mode": "loud"}}), "spec.gates.quality.mode"),
    "inconclusive then": (minimal(gates={"inconclusive": {"then": "x"}}), "pass | fail | pause"),
}  # fmt: skip


@pytest.mark.parametrize(("document", "fragment"), OTHER_ERRORS.values(), ids=OTHER_ERRORS.keys())
def test_other_errors_name_the_field(document: Any, fragment: str) -> None:
    assert fragment in refused(document)


ROUND_TRIPS = {
    "full": FULL_SPEC,
    "defaults": RolloutSpec(name="r1", model="sensor", release=2),
    # Long durations and odd percentages must survive the normal form exactly.
    "long and odd numbers": replace(
        FULL_SPEC,
        device_timeout_s=1_234_567.0,
        waves=(Wave(percent=12.5, soak_s=30 * 86_400.0), Wave(percent=100.0, soak_s=0.00005)),
        max_unavailable_percent=12.3456789,
    ),
    "count cap and wave without gates": replace(
        FULL_SPEC, max_unavailable=7, max_unavailable_percent=None, waves=(Wave(percent=100.0),)
    ),
}


@pytest.mark.parametrize("spec", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_the_normal_form_parses_back_to_an_equal_spec(spec: RolloutSpec) -> None:
    normal = spec_to_dict(spec)
    assert spec.to_dict() == normal
    again = parse_spec(json.loads(json.dumps(normal)))  # the form survives JSON
    assert again == spec
    assert again.digest() == spec.digest()
    assert spec_to_dict(again) == normal


def test_the_normal_form_of_the_full_document() -> None:
    body = spec_to_dict(FULL_SPEC)["spec"]
    assert body["selector"] == "site in (a,b), hw=rpi4, !legacy"
    assert body["device_timeout"] == "1800s"
    assert body["max_unavailable"] == "10%"
    assert body["waves"][0] == {
        "min_devices": 2,
        "percent": 10.0,
        "soak": "600s",
        "approval": False,
    }
    assert body["gates"]["inconclusive"] == {"timeout": "900s", "then": "pass"}
    assert body["waves"][1]["gates"]["install"]["min_executed"] == 5


def test_digest_ignores_paused_and_nothing_else() -> None:
    base = FULL_SPEC.digest()
    assert len(base) == 64
    assert replace(FULL_SPEC, paused=False).digest() == base
    changed = [
        replace(FULL_SPEC, name="other"),
        replace(FULL_SPEC, dry_run=False),
        replace(FULL_SPEC, on_failure=OnFailure.PAUSE),
        replace(FULL_SPEC, retries=2),
        replace(FULL_SPEC, selector=parse_selector("hw=rpi4")),
        replace(FULL_SPEC, waves=FULL_SPEC.waves[2:]),
        replace(FULL_SPEC, gates=replace(FULL_GATES, inconclusive_timeout_s=901.0)),
        replace(FULL_SPEC, device_timeout_s=1800.5),
        replace(FULL_SPEC, version=None, release=3),
    ]
    digests = {spec.digest() for spec in changed}
    assert base not in digests
    assert len(digests) == len(changed)


def test_digest_tells_close_long_durations_apart() -> None:
    a = replace(FULL_SPEC, device_timeout_s=1_234_567.0)
    assert a.digest() != replace(a, device_timeout_s=1_234_568.0).digest()


CUMULATIVE = {
    "10% of 100": (Wave(percent=10.0), 100, 10),
    "rounds up": (Wave(percent=10.0), 5, 1),
    "33% of 10 rounds up": (Wave(percent=33.0), 10, 4),
    "min_devices lifts a small wave": (Wave(percent=10.0, min_devices=2), 5, 2),
    "min_devices capped by the target": (Wave(percent=10.0, min_devices=5), 3, 3),
    "percent 0 with min_devices 0": (Wave(percent=0.0, min_devices=0), 100, 0),
    "percent 0 still gets min_devices": (Wave(percent=0.0), 100, 1),
    "count": (Wave(count=7), 100, 7),
    "count capped by the target": (Wave(count=7), 3, 3),
    "count lifted by min_devices": (Wave(count=2, min_devices=5), 100, 5),
    "100% of 37": (Wave(percent=100.0), 37, 37),
    "empty target": (Wave(percent=100.0, min_devices=3), 0, 0),
}


@pytest.mark.parametrize(("wave", "total", "expected"), CUMULATIVE.values(), ids=CUMULATIVE.keys())
def test_wave_cumulative(wave: Wave, total: int, expected: int) -> None:
    assert wave.cumulative(total) == expected
