"""Shared data for the drift-summary tests: a small reference and live batches."""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from fleetcore.drift import DriftReference, build_reference
from fleetcore.drift.summary import DriftAccumulator, DriftCounts, WindowKey

CLASSES = ("a", "b", "c")
FEATURES = ("normal", "exponential", "discrete", "constant")
F64 = npt.NDArray[np.float64]


def softmax(z: F64) -> F64:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def live(n: int, seed: int, shift: float = 0.0) -> tuple[F64, F64]:
    """``n`` rows like the reference's (shifted), and their probabilities."""
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.normal(10.0 + shift, 2.0, n),
            rng.exponential(1.0, n),
            rng.integers(0, 3, n).astype(float),  # ties on the edges
            np.full(n, 4.25),
        ]
    )
    return x, softmax(rng.normal(0.0, 1.5, (n, len(CLASSES))))


@functools.lru_cache(maxsize=1)
def reference() -> DriftReference:
    x, p = live(3000, seed=0)
    labels = np.argmax(p, axis=1)
    return build_reference(x, p, labels, feature_names=FEATURES, class_names=CLASSES)


def accumulate(x: F64, p: F64) -> DriftCounts:
    acc = DriftAccumulator(reference())
    acc.update(x, p)
    return acc.take()


def key(**changes: object) -> WindowKey:
    fields: dict[str, object] = {
        "device": "dev-0001",
        "model": "sensor",
        "release": 3,
        "reference": reference().digest(),
        "start": 1_700_000_040,
        "length": 60,
        "seq": 17,
    }
    fields.update(changes)
    return WindowKey(**fields)  # type: ignore[arg-type]
