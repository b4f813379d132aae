"""The drift reference's typed format; see :mod:`fleetcore.drift` for the theory."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from fleetcore import canonical
from fleetcore._checks import (
    check_sum,
    counts_of,
    field_of,
    finite_number,
    names_of,
    obj_of,
    unknown_fields,
)
from fleetcore.errors import MetadataError
from fleetcore.stats import (
    FEATURE_COUNTS,
    FEATURE_EDGES,
    HISTOGRAMS,
    OUTPUT_BINS,
    Moments,
    check_edges,
)

FORMAT = "edgefleet.drift-reference/1"
F64 = npt.NDArray[np.float64]


# -- the reference ---------------------------------------------------------


@dataclass(frozen=True)
class FeatureReference:
    """One input feature: bin edges, reference counts and moments."""

    name: str
    edges: tuple[float, ...]
    counts: tuple[int, ...]
    moments: Moments
    unrecognized_fields: Mapping[str, Any] = field(default_factory=dict, hash=False)

    _KEYS: ClassVar[tuple[str, ...]] = ("name", "edges", "counts", "moments")

    def __post_init__(self) -> None:
        if len(self.edges) != FEATURE_EDGES or len(self.counts) != FEATURE_COUNTS:
            raise MetadataError(
                f"feature {self.name!r} needs {FEATURE_EDGES} edges and {FEATURE_COUNTS} counts"
            )
        check_edges(self.edges)
        check_sum(self.counts, self.moments.n, f"counts of feature {self.name!r}")
        m = self.moments
        if m.n and not all(math.isfinite(v) for v in (m.mean, m.m2, m.m3, m.m4, m.min, m.max)):
            raise MetadataError(f"moments of feature {self.name!r} overflow; values too large")

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.unrecognized_fields,
            "name": self.name,
            "edges": list(self.edges),
            "counts": list(self.counts),
            "moments": self.moments.to_dict(),
        }

    @classmethod
    def from_dict(cls, value: Any) -> FeatureReference:
        obj = obj_of(value, "feature")
        name = names_of([field_of(obj, "name", "feature")], "feature name")[0]
        what = f"feature {name!r}"
        raw_edges = field_of(obj, "edges", what)
        if not isinstance(raw_edges, list) or len(raw_edges) != FEATURE_EDGES:
            raise MetadataError(f"{what} edges must be a list of {FEATURE_EDGES} numbers")
        return cls(
            name=name,
            edges=tuple(finite_number(v, f"{what} edge") for v in raw_edges),
            counts=counts_of(field_of(obj, "counts", what), FEATURE_COUNTS, f"{what} counts"),
            moments=Moments.from_dict(field_of(obj, "moments", what)),
            unrecognized_fields=unknown_fields(obj, cls._KEYS),
        )


@dataclass(frozen=True)
class Histogram:
    """Equal-width counts on the closed range ``[low, high]``."""

    low: float
    high: float
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise MetadataError("histogram range must be finite with low < high")
        if len(self.counts) != OUTPUT_BINS:
            raise MetadataError(f"histogram needs {OUTPUT_BINS} counts")

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, value: Any, what: str) -> Histogram:
        obj = obj_of(value, what)
        return cls(
            low=finite_number(field_of(obj, "low", what), f"{what} low"),
            high=finite_number(field_of(obj, "high", what), f"{what} high"),
            counts=counts_of(field_of(obj, "counts", what), OUTPUT_BINS, f"{what} counts"),
        )

    def midpoints(self) -> F64:
        step = (self.high - self.low) / OUTPUT_BINS
        return self.low + step * (np.arange(OUTPUT_BINS, dtype=np.float64) + 0.5)


@dataclass(frozen=True)
class OutputReference:
    """The probability output: predicted-class counts and three histograms."""

    name: str
    class_counts: tuple[int, ...]
    entropy: Histogram
    margin: Histogram
    max_probability: Histogram
    unrecognized_fields: Mapping[str, Any] = field(default_factory=dict, hash=False)

    _KEYS: ClassVar[tuple[str, ...]] = ("name", "class_counts", "histograms")

    def histograms(self) -> dict[str, Histogram]:
        return {name: getattr(self, name) for name in HISTOGRAMS}

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.unrecognized_fields,
            "name": self.name,
            "class_counts": list(self.class_counts),
            "histograms": {name: h.to_dict() for name, h in self.histograms().items()},
        }

    @classmethod
    def from_dict(cls, value: Any, n_classes: int) -> OutputReference:
        obj = obj_of(value, "output")
        hists = obj_of(field_of(obj, "histograms", "output"), "output histograms")
        parsed = {
            name: Histogram.from_dict(
                field_of(hists, name, "output histograms"), f"{name} histogram"
            )
            for name in HISTOGRAMS
        }
        return cls(
            name=names_of([field_of(obj, "name", "output")], "output name")[0],
            class_counts=counts_of(
                field_of(obj, "class_counts", "output"), n_classes, "class counts"
            ),
            entropy=parsed["entropy"],
            margin=parsed["margin"],
            max_probability=parsed["max_probability"],
            unrecognized_fields=unknown_fields(obj, cls._KEYS),
        )


@dataclass(frozen=True)
class AccuracyTable:
    """Per max-probability bin: reference predictions and how many were right."""

    count: tuple[int, ...]
    correct: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.count) != OUTPUT_BINS or len(self.correct) != OUTPUT_BINS:
            raise MetadataError(f"accuracy table needs {OUTPUT_BINS} bins")
        if any(c > t for c, t in zip(self.correct, self.count, strict=True)):
            raise MetadataError("accuracy table has more correct than counted in a bin")

    def accuracy(self) -> float:
        """Accuracy on the reference data."""
        return sum(self.correct) / max(sum(self.count), 1)

    def estimate(self, counts: Sequence[int], fallback: Sequence[float]) -> float | None:
        """Expected accuracy for a max-probability histogram ``counts``.

        Each bin contributes its reference accuracy; a bin the reference never
        reached uses ``fallback`` (the bin's mid confidence, i.e. assumes a
        calibrated model there). ``None`` when ``counts`` is all zero.
        """
        if len(counts) != OUTPUT_BINS or len(fallback) != OUTPUT_BINS:
            raise ValueError(f"need {OUTPUT_BINS} counts and fallbacks")
        total = sum(counts)
        if total == 0:
            return None
        expected = 0.0
        for seen, ref, right, guess in zip(counts, self.count, self.correct, fallback, strict=True):
            expected += seen * (right / ref if ref else guess)
        return expected / total

    def to_dict(self) -> dict[str, Any]:
        return {"bins": "max_probability", "count": list(self.count), "correct": list(self.correct)}

    @classmethod
    def from_dict(cls, value: Any) -> AccuracyTable:
        obj = obj_of(value, "accuracy table")
        if obj.get("bins") != "max_probability":
            raise MetadataError("accuracy table must be binned by max_probability")
        return cls(
            count=counts_of(field_of(obj, "count", "accuracy"), OUTPUT_BINS, "accuracy counts"),
            correct=counts_of(
                field_of(obj, "correct", "accuracy"), OUTPUT_BINS, "accuracy correct"
            ),
        )


@dataclass(frozen=True)
class DriftReference:
    """Everything a device and the control plane need to judge drift for one release."""

    class_names: tuple[str, ...]
    n: int
    features: tuple[FeatureReference, ...]
    output: OutputReference
    accuracy: AccuracyTable | None = None
    format: str = FORMAT
    unrecognized_fields: Mapping[str, Any] = field(default_factory=dict, hash=False)

    _KEYS: ClassVar[tuple[str, ...]] = (
        "format",
        "n",
        "class_names",
        "features",
        "output",
        "accuracy",
    )

    def __post_init__(self) -> None:
        if self.format != FORMAT:
            raise MetadataError(f"drift reference format {self.format!r} is not {FORMAT!r}")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise MetadataError("drift reference n must be a positive integer")
        names_of(self.class_names, "class names")
        if len(self.class_names) < 2:
            raise MetadataError("a classifier needs at least two classes")
        if not self.features:
            raise MetadataError("drift reference needs at least one feature")
        names_of(self.feature_names, "feature names")
        for feature in self.features:
            if feature.moments.n != self.n:
                raise MetadataError(f"feature {feature.name!r} moments describe another n")
        if len(self.output.class_counts) != len(self.class_names):
            raise MetadataError("class counts do not match the class names")
        check_sum(self.output.class_counts, self.n, "class counts")
        for name, hist in self.output.histograms().items():
            check_sum(hist.counts, self.n, f"{name} histogram counts")
        if self.accuracy is not None and self.accuracy.count != self.output.max_probability.counts:
            raise MetadataError("accuracy table counts differ from the max_probability histogram")

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def edges(self) -> F64:
        """Bin edges of all features, ``[F, 17]``, for :func:`bin_counts_matrix`."""
        return np.array([f.edges for f in self.features], dtype=np.float64)

    def estimate_accuracy(self, max_probability_counts: Sequence[int]) -> float | None:
        """Label-free accuracy estimate from a device's max-probability histogram."""
        if self.accuracy is None:
            return None
        mids = self.output.max_probability.midpoints()
        return self.accuracy.estimate(max_probability_counts, [float(m) for m in mids])

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.unrecognized_fields,
            "format": self.format,
            "n": self.n,
            "class_names": list(self.class_names),
            "features": [f.to_dict() for f in self.features],
            "output": self.output.to_dict(),
            "accuracy": None if self.accuracy is None else self.accuracy.to_dict(),
        }

    @classmethod
    def from_dict(cls, value: Any) -> DriftReference:
        """Parse and validate; raises MetadataError, keeps unknown fields."""
        obj = obj_of(value, "drift reference")
        fmt = field_of(obj, "format", "drift reference")
        if fmt != FORMAT:
            raise MetadataError(f"drift reference format {fmt!r} is not {FORMAT!r}")
        class_names = names_of(field_of(obj, "class_names", "drift reference"), "class names")
        raw_features = field_of(obj, "features", "drift reference")
        if not isinstance(raw_features, list):
            raise MetadataError("drift reference features must be a list")
        raw_accuracy = field_of(obj, "accuracy", "drift reference")
        n = field_of(obj, "n", "drift reference")
        return cls(
            class_names=class_names,
            n=n,
            features=tuple(FeatureReference.from_dict(f) for f in raw_features),
            output=OutputReference.from_dict(
                field_of(obj, "output", "drift reference"), len(class_names)
            ),
            accuracy=None if raw_accuracy is None else AccuracyTable.from_dict(raw_accuracy),
            format=FORMAT,
            unrecognized_fields=unknown_fields(obj, cls._KEYS),
        )

    def to_bytes(self) -> bytes:
        """Canonical JSON: the bytes whose digest a release manifest signs."""
        return canonical.encode(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> DriftReference:
        return cls.from_dict(canonical.decode(data))

    def digest(self) -> str:
        """sha256 hex of :meth:`to_bytes`."""
        return hashlib.sha256(self.to_bytes()).hexdigest()


__all__ = [
    "F64",
    "FORMAT",
    "AccuracyTable",
    "DriftReference",
    "FeatureReference",
    "Histogram",
    "OutputReference",
]
