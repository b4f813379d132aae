"""Measurements behind the validation gate, one function per measurement.

Theory of operation: every function takes a loaded
:class:`~fleetcore.runtimes.ModelRuntime` and plain arrays and returns numbers
or arrays; none of them decides pass or fail (:mod:`.validation` does). Data is
fed the way the model declares it: one ``[batch, features]`` input, in chunks
no larger than a fixed batch dimension (the last chunk padded and trimmed), so
fixed-batch exports work too. A model that cannot run on inputs of its own
declared shape is a broken upload, so run failures become
:class:`~control_plane.errors.InvalidInputError`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from control_plane.errors import InvalidInputError
from control_plane.registry.datasets import Dataset
from fleetcore.errors import RuntimeLoadError
from fleetcore.metadata import SmokeTests, SmokeVector
from fleetcore.runtimes import ModelRuntime, make_expected_outputs
from fleetcore.tensors import DTYPES

#: Rows per inference when the model's batch dimension is free.
PREDICT_BATCH = 1024
#: Untimed single-row inferences before latency is measured.
WARMUP_RUNS = 20
#: Seed for choosing smoke rows and for generated smoke inputs.
SMOKE_SEED = 0

Feeds = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True)
class InputShape:
    """The model's single ``[batch, features]`` input."""

    name: str
    dtype: str
    batch: int | None
    features: int

    def describe(self) -> str:
        return f"input {self.name!r} {dims((self.batch, self.features))}"


def dims(shape: Sequence[int | None]) -> str:
    """A shape as messages print it: ``[N, 20]``, ``N`` for a free dimension."""
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


def input_shape(runtime: ModelRuntime, role: str) -> InputShape:
    """The one ``[batch, F]`` input that datasets feed; otherwise InvalidInputError."""
    if len(runtime.inputs) != 1:
        names = [spec.name for spec in runtime.inputs]
        raise InvalidInputError(
            f"the {role} has {len(names)} inputs {names}; datasets feed single-input models only"
        )
    spec = runtime.inputs[0]
    if len(spec.shape) != 2 or spec.shape[1] is None:
        raise InvalidInputError(
            f"the {role} input {spec.name!r} is {dims(spec.shape)}; datasets need [batch, features]"
        )
    return InputShape(spec.name, spec.dtype, spec.shape[0], int(spec.shape[1]))


def run_checked(runtime: ModelRuntime, feeds: Feeds, role: str) -> dict[str, npt.NDArray[Any]]:
    try:
        return runtime.run(feeds)
    except RuntimeLoadError as exc:
        raise InvalidInputError(f"the {role} loads but fails to run: {exc}") from exc


def predict(
    runtime: ModelRuntime, shape: InputShape, x: npt.NDArray[np.float32], role: str
) -> npt.NDArray[np.float64]:
    """The first output for every row of ``x``, as float64 ``[n, ...]``."""
    step = shape.batch if shape.batch is not None else PREDICT_BATCH
    output = runtime.outputs[0].name
    dtype = DTYPES[shape.dtype]
    chunks = []
    for start in range(0, x.shape[0], step):
        chunk = x[start : start + step]
        rows = chunk.shape[0]
        if shape.batch is not None and rows < step:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - rows, axis=0)])
        feeds = {shape.name: np.ascontiguousarray(chunk, dtype=dtype)}
        result = np.asarray(run_checked(runtime, feeds, role)[output], dtype=np.float64)
        if result.ndim == 0 or result.shape[0] != chunk.shape[0]:
            raise InvalidInputError(
                f"the {role} output {output!r} is {list(result.shape)} for a batch of "
                f"{chunk.shape[0]}; expected one row per input row"
            )
        chunks.append(result[:rows])
    return np.concatenate(chunks)


def check_classes(scores: npt.NDArray[np.float64], data: Dataset, output: str, what: str) -> int:
    """Number of classes in a ``[n, K >= 2]`` output that ``data``'s labels fit."""
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise InvalidInputError(
            f"labels, parents and drift references need a [N, classes >= 2] first output; "
            f"the model output {output!r} is {dims((None, *scores.shape[1:]))}"
        )
    classes = int(scores.shape[1])
    if data.class_names is not None and len(data.class_names) != classes:
        raise InvalidInputError(
            f"{what} names {len(data.class_names)} classes but the model output {output!r} "
            f"is [N, {classes}]"
        )
    if data.y is not None and int(data.y.max()) >= classes:
        raise InvalidInputError(
            f"{what} labels go up to {int(data.y.max())} but the model output {output!r} "
            f"is [N, {classes}]"
        )
    return classes


def check_data(runtime: ModelRuntime, datasets: dict[str, Dataset | None]) -> InputShape | None:
    """The model's input when any dataset is given; each must have its feature count."""
    present = {what: data for what, data in datasets.items() if data is not None}
    if not present:
        return None
    shape = input_shape(runtime, "model")
    for what, data in present.items():
        if data.n_features != shape.features:
            raise InvalidInputError(
                f"{what} x is [{data.n_rows}, {data.n_features}] but the model {shape.describe()}"
            )
    # Same names in a different order would silently feed columns to the wrong inputs.
    for attr in ("feature_names", "class_names"):
        named = {getattr(data, attr) for data in present.values()} - {None}
        if len(named) > 1:
            raise InvalidInputError(f"{' and '.join(present)} disagree on {attr}")
    return shape


def sample_rows(data: Dataset, count: int, seed: int = SMOKE_SEED) -> npt.NDArray[np.float32]:
    """``count`` distinct rows of ``data`` (all of them when it has fewer), in file order."""
    if data.n_rows <= count:
        return data.x
    chosen = np.sort(np.random.default_rng(seed).choice(data.n_rows, size=count, replace=False))
    return data.x[chosen]


def smoke_inputs(runtime: ModelRuntime, source: Dataset | None, count: int) -> list[Feeds]:
    """Batch-of-one input vectors: real rows from ``source``, else a seeded normal draw."""
    if source is not None:
        shape = input_shape(runtime, "model")
        rows = sample_rows(source, count)
        dtype = DTYPES[shape.dtype]
        return [{shape.name: np.asarray(row[None, :], dtype=dtype)} for row in rows]
    rng = np.random.default_rng(SMOKE_SEED)
    vectors = []
    for _ in range(count):
        feeds = {}
        for spec in runtime.inputs:
            dims = tuple(1 if d is None else d for d in spec.shape)
            feeds[spec.name] = np.asarray(rng.standard_normal(dims), dtype=DTYPES[spec.dtype])
        vectors.append(feeds)
    return vectors


def make_smoke_tests(
    runtime: ModelRuntime, inputs: Sequence[Feeds], *, atol: float, rtol: float
) -> SmokeTests:
    try:
        expected = make_expected_outputs(runtime, inputs)
    except RuntimeLoadError as exc:
        raise InvalidInputError(f"the model loads but fails to run: {exc}") from exc
    vectors = tuple(
        SmokeVector(inputs=dict(i), expected=e) for i, e in zip(inputs, expected, strict=True)
    )
    return SmokeTests(vectors, atol=atol, rtol=rtol)


def latency_ms(runtime: ModelRuntime, rows: Sequence[Feeds], runs: int) -> tuple[float, float]:
    """p50 and p95 wall time of single-row inference, in milliseconds, after a warm-up."""
    if not rows:
        raise ValueError("latency needs at least one input row")
    for i in range(min(WARMUP_RUNS, runs)):
        run_checked(runtime, rows[i % len(rows)], "model")
    timings = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        feeds = rows[i % len(rows)]
        started = time.perf_counter()
        run_checked(runtime, feeds, "model")
        timings[i] = time.perf_counter() - started
    p50, p95 = np.percentile(timings, [50, 95]) * 1000.0
    return float(p50), float(p95)


def latency_rows(
    shape: InputShape | None, data: Dataset | None, smoke: SmokeTests, count: int
) -> list[Feeds]:
    """Single-row feeds for timing: rows of ``data`` when given, else the smoke inputs."""
    if data is None or shape is None:
        return [dict(v.inputs) for v in smoke.vectors]
    dtype = DTYPES[shape.dtype]
    rows = sample_rows(data, count, seed=SMOKE_SEED + 1)
    return [{shape.name: np.asarray(row[None, :], dtype=dtype)} for row in rows]


@dataclass(frozen=True)
class Comparison:
    """Accuracy of a model (and its parent) on the same eval rows."""

    rows: int
    correct: int | None
    parent_correct: int | None
    agreeing: int | None

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None else self.correct / self.rows

    @property
    def parent_accuracy(self) -> float | None:
        return None if self.parent_correct is None else self.parent_correct / self.rows

    @property
    def agreement(self) -> float | None:
        return None if self.agreeing is None else self.agreeing / self.rows

    @property
    def delta(self) -> float | None:
        """Model accuracy minus parent accuracy (negative: the model is worse)."""
        if self.correct is None or self.parent_correct is None:
            return None
        return (self.correct - self.parent_correct) / self.rows


def compare(
    scores: npt.NDArray[np.float64],
    labels: npt.NDArray[np.int64] | None,
    parent_scores: npt.NDArray[np.float64] | None,
) -> Comparison:
    predicted = np.argmax(scores, axis=1)
    parent_predicted = None if parent_scores is None else np.argmax(parent_scores, axis=1)
    correct = parent_correct = agreeing = None
    if labels is not None:
        correct = int(np.count_nonzero(predicted == labels))
        if parent_predicted is not None:
            parent_correct = int(np.count_nonzero(parent_predicted == labels))
    if parent_predicted is not None:
        agreeing = int(np.count_nonzero(predicted == parent_predicted))
    return Comparison(int(scores.shape[0]), correct, parent_correct, agreeing)


def default_names(names: tuple[str, ...] | None, count: int, prefix: str) -> tuple[str, ...]:
    return names if names is not None else tuple(f"{prefix}{i}" for i in range(count))


__all__ = [
    "PREDICT_BATCH",
    "SMOKE_SEED",
    "WARMUP_RUNS",
    "Comparison",
    "InputShape",
    "check_classes",
    "check_data",
    "compare",
    "default_names",
    "dims",
    "input_shape",
    "latency_ms",
    "latency_rows",
    "make_smoke_tests",
    "predict",
    "run_checked",
    "sample_rows",
    "smoke_inputs",
]
