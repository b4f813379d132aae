"""The rollout spec: what an operator writes in ``rollout.yaml``, parsed and checked.

Theory of operation: :func:`parse_spec` takes the decoded YAML (or the
JSON of ``POST /v1/rollouts``) and returns a frozen :class:`RolloutSpec`, or
raises :class:`~control_plane.errors.InvalidInputError` naming the field that
is wrong. Unknown fields are refused, so a typo never silently drops a gate.
:meth:`RolloutSpec.to_dict` gives the normalised form (every default filled
in); its digest is what ``fleetctl apply`` compares to stay idempotent.

A document looks like this (``apiVersion`` and ``kind`` are optional)::

    apiVersion: edgefleet/v1
    kind: Rollout
    metadata: {name: sensor-1.1.0}
    spec:
      model: sensor
      version: 1.1.0                # or release: 2
      selector: "site in (a,b), hw=rpi4"
      stratify_by: site
      waves:                        # cumulative: wave 2 brings the target to 50 %
        - {percent: 10, min_devices: 2, soak: 10m}
        - {percent: 50, approval: true}
        - {percent: 100}
      rate_per_minute: 600
      device_timeout: 30m
      retries: 1
      max_unavailable: 10%
      gates:
        install: {min_success_ratio: 0.95, max_failure_ratio: 0.05, min_executed: 2}
        health: {max_error_rate: 0.01, max_p95_latency_ratio: 1.5, min_inferences: 200}
        quality: {mode: observe}
        inconclusive: {timeout: 15m, then: pause}
      on_failure: revert_wave       # pause | revert_wave | revert_all
      dry_run: false

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from control_plane.errors import InvalidInputError
from control_plane.rollouts._normal import spec_to_dict
from control_plane.rollouts._reader import Reader, duration_s
from control_plane.rollouts.selector import Selector, parse_selector
from fleetcore.protocol import LABEL_KEY

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}")
MAX_WAVES = 20


class OnFailure(str, Enum):
    PAUSE = "pause"
    REVERT_WAVE = "revert_wave"
    REVERT_ALL = "revert_all"


class QualityMode(str, Enum):
    OFF = "off"
    OBSERVE = "observe"
    PAUSE = "pause"
    REVERT = "revert"


class AfterInconclusive(str, Enum):
    PASS = "pass"  # noqa: S105 - an outcome, not a password
    FAIL = "fail"
    PAUSE = "pause"


@dataclass(frozen=True)
class InstallGate:
    min_success_ratio: float = 0.95
    max_failure_ratio: float = 0.05
    min_executed: int = 1


@dataclass(frozen=True)
class HealthGate:
    max_error_rate: float | None = None
    max_p95_latency_ratio: float | None = None
    min_inferences: int = 100


@dataclass(frozen=True)
class QualityGate:
    mode: QualityMode = QualityMode.OFF


@dataclass(frozen=True)
class Gates:
    install: InstallGate = field(default_factory=InstallGate)
    health: HealthGate | None = None
    quality: QualityGate = field(default_factory=QualityGate)
    inconclusive_timeout_s: float = 900.0
    after_inconclusive: AfterInconclusive = AfterInconclusive.PAUSE


@dataclass(frozen=True)
class Wave:
    """One wave; ``percent`` or ``count`` is cumulative over the target."""

    percent: float | None = None
    count: int | None = None
    min_devices: int = 1
    soak_s: float = 0.0
    approval: bool = False
    gates: Gates | None = None  # None: the rollout's gates

    def cumulative(self, total: int) -> int:
        """Devices of a ``total``-device target reached by the end of this wave."""
        want = (
            self.count
            if self.count is not None
            # round first: 64.4 % of 250 is 161, not the 161.00000000000003 floats make of it
            else math.ceil(round(total * (self.percent or 0) / 100, 6))
        )
        return min(total, max(want, self.min_devices))


@dataclass(frozen=True)
class RolloutSpec:
    name: str
    model: str
    version: str | None = None
    release: int | None = None
    selector: Selector = field(default_factory=Selector)
    waves: tuple[Wave, ...] = (Wave(percent=100.0),)
    stratify_by: str | None = None
    rate_per_minute: float | None = None
    device_timeout_s: float = 1800.0
    retries: int = 0
    max_unavailable: int | None = None
    max_unavailable_percent: float | None = None
    gates: Gates = field(default_factory=Gates)
    on_failure: OnFailure = OnFailure.PAUSE
    dry_run: bool = False
    paused: bool = False

    def gates_of(self, wave: int) -> Gates:
        return self.waves[wave].gates or self.gates

    def unavailable_cap(self, total: int) -> int | None:
        """Most devices updating at once, or ``None`` for no cap."""
        caps = []
        if self.max_unavailable is not None:
            caps.append(self.max_unavailable)
        if self.max_unavailable_percent is not None:
            caps.append(max(1, math.floor(total * self.max_unavailable_percent / 100)))
        return min(caps) if caps else None

    def to_dict(self) -> dict[str, Any]:
        return spec_to_dict(self)

    def digest(self) -> str:
        """Identity of the spec apart from ``paused`` (which ``apply`` may toggle)."""
        body = {k: v for k, v in self.to_dict()["spec"].items() if k != "paused"}
        text = json.dumps({"name": self.name, "spec": body}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


# -- parsing ----------------------------------------------------------------------------


def _ratio(o: Reader, key: str, default: float | None) -> float | None:
    return o.number(key, default, 0.0, 1.0)


def _gates(obj: Any, where: str, base: Gates) -> Gates:
    o = Reader(obj, where)
    gates = base
    if (raw := o.get("install")) is not None:
        i = Reader(raw, f"{where}.install")
        gates = replace(
            gates,
            install=InstallGate(
                min_success_ratio=_ratio(i, "min_success_ratio", base.install.min_success_ratio)
                or 0.0,
                max_failure_ratio=_ratio(i, "max_failure_ratio", base.install.max_failure_ratio)
                or 0.0,
                min_executed=i.integer("min_executed", base.install.min_executed, 0, 10**7) or 0,
            ),
        )
        i.done()
    if (raw := o.get("health")) is not None:
        h = Reader(raw, f"{where}.health")
        old = base.health or HealthGate()
        health = HealthGate(
            max_error_rate=_ratio(h, "max_error_rate", old.max_error_rate),
            max_p95_latency_ratio=h.number(
                "max_p95_latency_ratio", old.max_p95_latency_ratio, 0.01, 1000.0
            ),
            min_inferences=h.integer("min_inferences", old.min_inferences, 1, 10**9) or 1,
        )
        h.done()
        if health.max_error_rate is None and health.max_p95_latency_ratio is None:
            raise InvalidInputError(
                f"{where}.health: set max_error_rate, max_p95_latency_ratio or both"
            )
        gates = replace(gates, health=health)
    if (raw := o.get("quality")) is not None:
        q = Reader(raw, f"{where}.quality")
        gates = replace(gates, quality=QualityGate(q.choice("mode", QualityMode, QualityMode.OFF)))
        q.done()
    if (raw := o.get("inconclusive")) is not None:
        c = Reader(raw, f"{where}.inconclusive")
        gates = replace(
            gates,
            inconclusive_timeout_s=c.duration("timeout", base.inconclusive_timeout_s),
            after_inconclusive=c.choice("then", AfterInconclusive, base.after_inconclusive),
        )
        c.done()
    o.done()
    return gates


def _wave(obj: Any, where: str) -> Wave:
    o = Reader(obj, where)
    o.allow("percent", "count", "min_devices", "soak", "approval", "gates")
    percent = o.number("percent", None, 0.0, 100.0)
    count = o.integer("count", None, 1, 10**7)
    if (percent is None) == (count is None):
        raise InvalidInputError(f"{where}: give percent or count (cumulative), not both")
    wave = Wave(
        percent=percent,
        count=count,
        min_devices=o.integer("min_devices", 1, 0, 10**7) or 0,
        soak_s=o.duration("soak", 0.0),
        approval=o.boolean("approval", False),
    )
    raw = o.get("gates")
    o.done()
    return wave if raw is None else replace(wave, gates=raw)


def _max_unavailable(value: Any) -> tuple[int | None, float | None]:
    where = "spec.max_unavailable"
    if value is None:
        return None, None
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            percent = float(value.strip()[:-1])
        except ValueError:
            raise InvalidInputError(f"{where}: {value!r} is not a percentage") from None
        if not 0 < percent <= 100:
            raise InvalidInputError(f"{where}: {value!r} is not between 0% and 100%")
        return None, percent
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value, None
    raise InvalidInputError(f"{where}: {value!r} is not a device count (>= 1) or a percentage")


def parse_spec(document: Any) -> RolloutSpec:
    """A rollout document (YAML or JSON, decoded) -> :class:`RolloutSpec`."""
    top = Reader(document, "rollout")
    api_version, kind = top.get("apiVersion"), top.get("kind")
    if api_version is not None and api_version != "edgefleet/v1":
        raise InvalidInputError(f"apiVersion {api_version!r} is not edgefleet/v1")
    if kind is not None and kind != "Rollout":
        raise InvalidInputError(f"kind {kind!r} is not Rollout")
    meta = Reader(top.get("metadata") or {}, "metadata")
    name = meta.string("name", NAME)
    meta.get("labels")  # allowed, informational
    meta.done()
    s = Reader(top.get("spec"), "spec")
    top.done()
    if name is None:
        raise InvalidInputError("metadata.name is required (a-z, 0-9, '.', '_', '-')")
    model = s.string("model", MODEL)
    if model is None:
        raise InvalidInputError("spec.model is required")
    if isinstance(s.obj.get("version"), float):
        raise InvalidInputError(
            f'spec.version: {s.obj["version"]!r} is a number; quote it ("1.10" is not 1.1)'
        )
    version = s.string("version", VERSION)
    release = s.integer("release", None, 1, 2**31 - 1)
    if (version is None) == (release is None):
        raise InvalidInputError("spec: name the release by version or by release counter")
    selector = s.get("selector")
    if selector is not None and not isinstance(selector, str):
        raise InvalidInputError("spec.selector must be a string like 'site in (a,b), hw=rpi4'")
    gates = _gates(s.get("gates") or {}, "spec.gates", Gates())
    raw_waves = s.get("waves")
    if raw_waves is None:
        raw_waves = [{"percent": 100}]
    if not isinstance(raw_waves, list) or not 1 <= len(raw_waves) <= MAX_WAVES:
        raise InvalidInputError(f"spec.waves must be a list of 1 to {MAX_WAVES} waves")
    waves = []
    for index, raw in enumerate(raw_waves):
        wave = _wave(raw, f"spec.waves[{index}]")
        if wave.gates is not None:
            wave = replace(wave, gates=_gates(wave.gates, f"spec.waves[{index}].gates", gates))
        waves.append(wave)
    _check_waves(waves)
    stratify = s.string("stratify_by", LABEL_KEY)
    unavailable, unavailable_percent = _max_unavailable(s.get("max_unavailable"))
    spec = RolloutSpec(
        name=name,
        model=model,
        version=version,
        release=release,
        selector=parse_selector(selector),
        waves=tuple(waves),
        stratify_by=stratify,
        rate_per_minute=s.number("rate_per_minute", None, 0.1, 10**7),
        device_timeout_s=s.duration("device_timeout", 1800.0),
        retries=s.integer("retries", 0, 0, 10) or 0,
        max_unavailable=unavailable,
        max_unavailable_percent=unavailable_percent,
        gates=gates,
        on_failure=s.choice("on_failure", OnFailure, OnFailure.PAUSE),
        dry_run=s.boolean("dry_run", False),
        paused=s.boolean("paused", False),
    )
    s.done()
    if spec.device_timeout_s < 1:
        raise InvalidInputError("spec.device_timeout must be at least 1s")
    return spec


def _check_waves(waves: list[Wave]) -> None:
    last = waves[-1]
    if last.percent != 100.0:
        raise InvalidInputError("spec.waves: the last wave must be percent: 100 (the whole target)")
    previous_percent, previous_count = 0.0, 0
    for index, wave in enumerate(waves):
        if wave.percent is not None:
            if wave.percent < previous_percent:
                raise InvalidInputError(
                    f"spec.waves[{index}]: percent is cumulative and must not go down"
                )
            previous_percent = wave.percent
        if wave.count is not None:
            if wave.count < previous_count:
                raise InvalidInputError(
                    f"spec.waves[{index}]: count is cumulative and must not go down"
                )
            previous_count = wave.count


__all__ = [
    "AfterInconclusive",
    "Gates",
    "HealthGate",
    "InstallGate",
    "OnFailure",
    "QualityGate",
    "QualityMode",
    "RolloutSpec",
    "Wave",
    "duration_s",
    "parse_spec",
    "spec_to_dict",
]
