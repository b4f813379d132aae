"""Measure model variants the way devices run them: through fleetcore.runtimes.

Theory of operation: each variant file (float ONNX, int8 dynamic and static
ONNX, int8 TFLite) is loaded with :func:`fleetcore.runtimes.load_model` on one
thread, then scored on held-out data: accuracy against the labels, agreement
(same predicted class) with the float numpy model, the largest probability
difference from it, accuracy on a drifted set, file size, and the median
latency of a single-row inference after a short warm-up. Agreement isolates
what quantization changed from what the float model already got wrong.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fleetcore.runtimes import ModelRuntime, load_model
from models.sensor.export import INPUT_NAME, OUTPUT_NAME

#: Single-row inferences timed per variant (after WARMUP_RUNS untimed ones).
LATENCY_RUNS = 200
WARMUP_RUNS = 20


@dataclass(frozen=True)
class VariantResult:
    name: str
    file: str
    runtime: str
    accuracy: float
    agreement: float
    max_abs_diff: float
    drifted_accuracy: float
    size_bytes: int
    latency_ms_p50: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def predict_proba(runtime: ModelRuntime, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Probabilities for all rows, in one batch."""
    out = runtime.run({INPUT_NAME: np.ascontiguousarray(X, dtype=np.float32)})
    return np.asarray(out[OUTPUT_NAME], dtype=np.float32)


def single_row_latency_ms(runtime: ModelRuntime, X: npt.NDArray[np.float32]) -> float:
    """Median wall time of one single-row inference, in milliseconds."""
    rows = [X[i : i + 1] for i in range(min(len(X), LATENCY_RUNS))]
    for row in rows[:WARMUP_RUNS]:
        runtime.run({INPUT_NAME: row})
    timings = []
    for i in range(LATENCY_RUNS):
        row = rows[i % len(rows)]
        started = time.perf_counter()
        runtime.run({INPUT_NAME: row})
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000.0


def evaluate_variant(
    name: str,
    path: Path,
    heldout: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]],
    drifted: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]],
    float_proba: npt.NDArray[np.float32],
) -> VariantResult:
    """Score one model file; raises RuntimeLoadError if it cannot be run."""
    runtime = load_model(path, threads=1)
    X, y = heldout
    proba = predict_proba(runtime, X)
    pred = proba.argmax(axis=1)
    X_drift, y_drift = drifted
    drift_pred = predict_proba(runtime, X_drift).argmax(axis=1)
    return VariantResult(
        name=name,
        file=path.name,
        runtime=f"{runtime.runtime} {runtime.runtime_version}",
        accuracy=float(np.mean(pred == y)),
        agreement=float(np.mean(pred == float_proba.argmax(axis=1))),
        max_abs_diff=float(np.abs(proba - float_proba).max()),
        drifted_accuracy=float(np.mean(drift_pred == y_drift)),
        size_bytes=path.stat().st_size,
        latency_ms_p50=single_row_latency_ms(runtime, X),
    )
