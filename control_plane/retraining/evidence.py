"""Drift evidence: what the fleet's drift analysis hands to the retraining triggers.

Theory of operation: the drift aggregation builds one :class:`DriftEvidence`
per model release (and cohort, if it splits the fleet) and window range, and
passes it to :meth:`~control_plane.retraining.service.RetrainingService.consider`.
:meth:`DriftEvidence.to_dict` is the JSON every action receives;
:meth:`DriftEvidence.from_dict` reads it back strictly (unknown fields are
refused, naming the field), for ``fleetctl retraining fire --evidence FILE``
and the API.

Invariants: shares are within 0..1, ``windows_drifted <= windows_considered``,
``window_start <= window_end``, times are timezone-aware. Accuracies are
fractions (0..1); a policy's ``min_accuracy_drop`` is in percentage points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from control_plane.errors import InvalidInputError
from control_plane.rollouts._reader import Reader
from control_plane.rollouts.spec import MODEL

MAX_FEATURES = 1024


@dataclass(frozen=True)
class DriftedFeature:
    """One feature (or output) whose drift test rejected, after multiple-testing correction."""

    name: str
    test: str
    p_value: float
    q_value: float
    effect: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "test": self.test,
            "p_value": self.p_value,
            "q_value": self.q_value,
            "effect": self.effect,
        }


def _feature(value: DriftedFeature | Mapping[str, Any], where: str) -> DriftedFeature:
    if isinstance(value, DriftedFeature):
        return value
    o = Reader(value, where)
    o.allow("name", "test", "p_value", "q_value", "effect")
    name, test = o.string("name"), o.string("test")
    if not name or not test:
        raise InvalidInputError(f"{where}: name and test are required")
    feature = DriftedFeature(
        name=name,
        test=test,
        p_value=o.number("p_value", 1.0, 0.0, 1.0) or 0.0,
        q_value=o.number("q_value", 1.0, 0.0, 1.0) or 0.0,
        effect=o.number("effect", 0.0, -1e12, 1e12) or 0.0,
    )
    o.done()
    return feature


@dataclass(frozen=True)
class DriftEvidence:
    model: str
    release: int
    cohort: str | None
    window_start: datetime
    window_end: datetime
    drifted_features: Sequence[DriftedFeature] = ()
    share_traffic: float = 0.0
    share_devices: float = 0.0
    windows_drifted: int = 0
    windows_considered: int = 0
    estimated_accuracy: float | None = None
    reference_accuracy: float | None = None
    accuracy_interval: tuple[float, float] | None = None
    labelled: bool = False
    #: Free-form extra facts from the analysis (devices, samples, ...); passed along as is.
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Accept plain dicts and lists from callers; store tuples of typed features.
        features = tuple(
            _feature(f, f"evidence.drifted_features[{i}]")
            for i, f in enumerate(self.drifted_features)
        )
        object.__setattr__(self, "drifted_features", features)
        if self.accuracy_interval is not None:
            low, high = (float(v) for v in self.accuracy_interval)
            object.__setattr__(self, "accuracy_interval", (low, high))
        self._check()

    def _check(self) -> None:
        if not MODEL.fullmatch(self.model):
            raise InvalidInputError(f"evidence.model: {self.model!r} is not a model name")
        if not 1 <= self.release <= 2**31 - 1:
            raise InvalidInputError(f"evidence.release: {self.release} is out of range")
        for name in ("window_start", "window_end"):
            when = getattr(self, name)
            if when.tzinfo is None or when.utcoffset() is None:
                raise InvalidInputError(f"evidence.{name}: times must be timezone-aware")
        if self.window_end < self.window_start:
            raise InvalidInputError("evidence.window_end is before window_start")
        for name in ("share_traffic", "share_devices"):
            share = getattr(self, name)
            if not (math.isfinite(share) and 0.0 <= share <= 1.0):
                raise InvalidInputError(f"evidence.{name}: {share} is not between 0 and 1")
        if not 0 <= self.windows_drifted <= self.windows_considered:
            raise InvalidInputError(
                "evidence: windows_drifted must be between 0 and windows_considered"
            )
        for name in ("estimated_accuracy", "reference_accuracy"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise InvalidInputError(f"evidence.{name}: {value} is not between 0 and 1")
        if len(self.drifted_features) > MAX_FEATURES:
            raise InvalidInputError(f"evidence.drifted_features: more than {MAX_FEATURES}")

    @property
    def accuracy_drop_points(self) -> float | None:
        """Reference minus estimated accuracy, in percentage points (positive: worse)."""
        if self.estimated_accuracy is None or self.reference_accuracy is None:
            return None
        return (self.reference_accuracy - self.estimated_accuracy) * 100.0

    def to_dict(self) -> dict[str, Any]:
        interval = self.accuracy_interval
        return {
            "model": self.model,
            "release": self.release,
            "cohort": self.cohort,
            "window_start": _iso(self.window_start),
            "window_end": _iso(self.window_end),
            "drifted_features": [f.to_dict() for f in self.drifted_features],
            "share_traffic": self.share_traffic,
            "share_devices": self.share_devices,
            "windows_drifted": self.windows_drifted,
            "windows_considered": self.windows_considered,
            "estimated_accuracy": self.estimated_accuracy,
            "reference_accuracy": self.reference_accuracy,
            "accuracy_interval": None if interval is None else list(interval),
            "labelled": self.labelled,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, data: Any) -> DriftEvidence:
        """Strict: unknown fields are refused, naming the field (InvalidInputError)."""
        o = Reader(data, "evidence")
        o.allow(*_FIELDS)
        model = o.string("model", MODEL)
        release = o.integer("release", None, 1, 2**31 - 1)
        if model is None or release is None:
            raise InvalidInputError("evidence: model and release are required")
        features = o.get("drifted_features") or []
        if not isinstance(features, list):
            raise InvalidInputError("evidence.drifted_features must be a list")
        interval = o.get("accuracy_interval")
        if interval is not None and not (
            isinstance(interval, list)
            and len(interval) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in interval)
        ):
            raise InvalidInputError("evidence.accuracy_interval must be [low, high] or null")
        details = o.get("details") or {}
        if not isinstance(details, dict):
            raise InvalidInputError("evidence.details must be a mapping")
        evidence = cls(
            model=model,
            release=release,
            cohort=o.string("cohort"),
            window_start=_time(o.get("window_start"), "evidence.window_start"),
            window_end=_time(o.get("window_end"), "evidence.window_end"),
            drifted_features=[
                _feature(f, f"evidence.drifted_features[{i}]") for i, f in enumerate(features)
            ],
            share_traffic=o.number("share_traffic", 0.0, 0.0, 1.0) or 0.0,
            share_devices=o.number("share_devices", 0.0, 0.0, 1.0) or 0.0,
            windows_drifted=o.integer("windows_drifted", 0, 0, 10**6) or 0,
            windows_considered=o.integer("windows_considered", 0, 0, 10**6) or 0,
            estimated_accuracy=o.number("estimated_accuracy", None, 0.0, 1.0),
            reference_accuracy=o.number("reference_accuracy", None, 0.0, 1.0),
            accuracy_interval=None if interval is None else (interval[0], interval[1]),
            labelled=o.boolean("labelled", False),
            details=details,
        )
        o.done()
        return evidence


_FIELDS = (
    "model", "release", "cohort", "window_start", "window_end", "drifted_features",
    "share_traffic", "share_devices", "windows_drifted", "windows_considered",
    "estimated_accuracy", "reference_accuracy", "accuracy_interval", "labelled", "details",
)  # fmt: skip


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _time(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidInputError(f"{where}: an ISO 8601 time is required")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(f"{where}: {value!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise InvalidInputError(f"{where}: {value!r} has no time zone")
    return when.astimezone(timezone.utc)


__all__ = ["DriftEvidence", "DriftedFeature"]
