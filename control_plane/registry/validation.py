"""The validation gate: what a model version must show before it can be signed.

Theory of operation: :func:`validate_model` loads the model in its real
runtime (one thread, as a small device would run it) and measures, in order:

1. the I/O schema, format, runtime and file size;
2. smoke-test vectors: ``smoke_vectors`` real rows of the reference data
   (else the eval data, else a seeded normal draw), one batch-of-one vector
   each, with the model's own outputs as expected values; these become the
   release manifest's :class:`~fleetcore.metadata.SmokeTests`;
3. accuracy on labelled eval data (argmax of the first output), and with a
   parent (the float model it was quantized from) the parent's accuracy on the
   same rows, the difference and the share of rows on which both agree;
4. p50/p95 latency of single-row inference after a warm-up;
5. the drift reference, from the reference data and the model's outputs;
6. the smoke vectors again: on the same session after all those runs (a model
   with per-call randomness fails here), then on a freshly loaded copy, exactly
   as a device checks them before activation.

Two kinds of failure, kept apart on purpose. Bad input (a file that is not a
loadable model, data whose shape does not fit the model, a model that cannot
run on inputs of its own declared shape) raises
:class:`~control_plane.errors.InvalidInputError`: nothing is recorded. A model
that works but misses a threshold yields a report with ``passed=False`` and
one line per missed threshold in ``reasons``; the version stays draft.

Thresholds that cannot be checked fail closed: ``min_accuracy`` without
labelled eval data, or a parent without eval data, is a reason. With a parent
and unlabelled eval data, disagreement bounds the accuracy drop from above
(a row can only lose correctness where the two disagree), so the drop check
passes only when disagreement itself is within ``max_accuracy_drop``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from control_plane.config import ValidationSettings
from control_plane.errors import InvalidInputError
from control_plane.registry import _validation_metrics as m
from control_plane.registry.datasets import Dataset
from fleetcore.drift import DriftReference, build_reference
from fleetcore.errors import MetadataError, RuntimeLoadError
from fleetcore.metadata import SmokeTests
from fleetcore.runtimes import ModelRuntime, SmokeResult, detect_format, load_model, run_smoke_test

#: Accuracy comparisons are made on counts; this absorbs float rounding only.
_EPSILON = 1e-9
#: Distinct data rows used as single-row latency inputs.
_LATENCY_ROWS = 256


@dataclass(frozen=True)
class ValidationReport:
    """What the gate measured and why (if at all) the model stays draft."""

    passed: bool
    reasons: tuple[str, ...]
    io_schema: dict[str, Any]
    format: str
    runtime: str
    runtime_version: str
    size_bytes: int
    latency_p50_ms: float
    latency_p95_ms: float
    accuracy: float | None
    parent_accuracy: float | None
    accuracy_delta: float | None
    agreement_with_parent: float | None
    smoke_tests: SmokeTests
    smoke_check: SmokeResult
    drift_reference: DriftReference | None
    thresholds: dict[str, Any]
    eval_rows: int | None = None
    reference_rows: int | None = None
    elapsed_s: float = 0.0

    @property
    def drift_reference_sha256(self) -> str | None:
        return None if self.drift_reference is None else self.drift_reference.digest()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for storage: the drift reference by digest, not whole."""
        nested = ("smoke_tests", "smoke_check", "drift_reference", "reasons", "thresholds")
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in nested}
        error = self.smoke_check.max_abs_error
        drift = self.drift_reference
        return {
            **out,
            "reasons": list(self.reasons),
            "thresholds": dict(self.thresholds),
            "smoke_tests": self.smoke_tests.to_dict(),
            "smoke_check": {
                "passed": self.smoke_check.passed,
                "max_abs_error": error if math.isfinite(error) else None,
                "detail": self.smoke_check.detail,
            },
            "drift_reference": None
            if drift is None
            else {"sha256": drift.digest(), "length": len(drift.to_bytes()), "n": drift.n},
        }


def smoke_tests_from_dict(report: Mapping[str, Any]) -> SmokeTests:
    """The :class:`SmokeTests` of a stored report (``ValidationReport.to_dict()``)."""
    if "smoke_tests" not in report:
        raise InvalidInputError("the validation report has no smoke tests")
    try:
        return SmokeTests.from_dict(report["smoke_tests"])
    except MetadataError as exc:
        raise InvalidInputError(f"the stored smoke tests are malformed: {exc}") from exc


def validate_model(
    model_path: Path,
    *,
    thresholds: ValidationSettings,
    eval_data: Dataset | None = None,
    parent_path: Path | None = None,
    reference_data: Dataset | None = None,
    fmt: str | None = None,
) -> ValidationReport:
    """Run the gate on ``model_path``; see the module docstring for what is checked.

    Raises:
        InvalidInputError: the model or parent is not loadable, the data does
            not fit the model, or the model fails to run on valid input.
    """
    started = time.perf_counter()
    model_path = Path(model_path)
    fmt = _format(model_path, fmt)
    runtime = _load(model_path, fmt, "model")
    size = model_path.stat().st_size
    shape = m.check_data(runtime, {"eval data": eval_data, "reference data": reference_data})
    parent = None if parent_path is None else _load(Path(parent_path), None, "parent model")
    parent_shape = None
    if parent is not None and shape is not None:
        parent_shape = m.input_shape(parent, "parent")
        if parent_shape.features != shape.features:
            raise InvalidInputError(
                f"the parent {parent_shape.describe()} but the model {shape.describe()}"
            )

    source = reference_data if reference_data is not None else eval_data
    vectors = m.smoke_inputs(runtime, source, thresholds.smoke_vectors)
    smoke = m.make_smoke_tests(
        runtime, vectors, atol=thresholds.smoke_atol, rtol=thresholds.smoke_rtol
    )
    comparison = None
    if eval_data is not None and shape is not None and (eval_data.labelled or parent is not None):
        comparison = _compare(runtime, shape, eval_data, parent, parent_shape)

    latency_data = eval_data if eval_data is not None else reference_data
    rows = m.latency_rows(shape, latency_data, smoke, _LATENCY_ROWS)
    p50, p95 = m.latency_ms(runtime, rows, thresholds.latency_runs)

    reasons: list[str] = []
    drift = None
    if reference_data is not None and shape is not None:
        drift, problems = _drift_reference(runtime, shape, reference_data, eval_data)
        reasons += problems
    # Again on the same session after hundreds of runs (catches per-call randomness),
    # then on a fresh load, as a device checks before activation.
    inputs = [v.inputs for v in smoke.vectors]
    expected = [v.expected for v in smoke.vectors]
    check = run_smoke_test(runtime, inputs, expected, atol=smoke.atol, rtol=smoke.rtol)
    if check.passed:
        fresh = _load(model_path, fmt, "model")
        check = run_smoke_test(fresh, inputs, expected, atol=smoke.atol, rtol=smoke.rtol)
    if not check.passed:
        finite = all(np.all(np.isfinite(e)) for want in expected for e in want.values())
        what = "non-deterministic" if finite else "non-finite outputs"
        reasons.insert(0, f"{what}: smoke outputs not reproduced: {check.detail}")
    reasons += _accuracy_reasons(thresholds, comparison, has_parent=parent is not None)
    if thresholds.max_latency_p95_ms is not None and p95 > thresholds.max_latency_p95_ms:
        reasons.append(
            f"p95 latency {p95:.3f} ms exceeds max_latency_p95_ms {thresholds.max_latency_p95_ms}"
        )
    if thresholds.max_size_bytes is not None and size > thresholds.max_size_bytes:
        reasons.append(f"size {size} bytes exceeds max_size_bytes {thresholds.max_size_bytes}")

    return ValidationReport(
        passed=not reasons,
        reasons=tuple(reasons),
        io_schema={
            "inputs": [spec.to_dict() for spec in runtime.inputs],
            "outputs": [spec.to_dict() for spec in runtime.outputs],
        },
        format=runtime.format,
        runtime=runtime.runtime,
        runtime_version=runtime.runtime_version,
        size_bytes=size,
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        accuracy=None if comparison is None else comparison.accuracy,
        parent_accuracy=None if comparison is None else comparison.parent_accuracy,
        accuracy_delta=None if comparison is None else comparison.delta,
        agreement_with_parent=None if comparison is None else comparison.agreement,
        smoke_tests=smoke,
        smoke_check=check,
        drift_reference=drift,
        thresholds=thresholds.model_dump(mode="json"),
        eval_rows=None if eval_data is None else eval_data.n_rows,
        reference_rows=None if reference_data is None else reference_data.n_rows,
        elapsed_s=round(time.perf_counter() - started, 3),
    )


def _format(path: Path, fmt: str | None) -> str:
    try:
        return detect_format(path) if fmt is None else fmt
    except RuntimeLoadError as exc:
        raise InvalidInputError(f"not a loadable ONNX/TFLite model: {exc}") from exc


def _load(path: Path, fmt: str | None, role: str) -> ModelRuntime:
    try:
        return load_model(path, fmt, threads=1)
    except RuntimeLoadError as exc:
        subject = "" if role == "model" else f"the {role} is "
        detail = " ".join(str(exc).split())
        raise InvalidInputError(f"{subject}not a loadable ONNX/TFLite model: {detail}") from exc


def _compare(
    runtime: ModelRuntime,
    shape: m.InputShape,
    data: Dataset,
    parent: ModelRuntime | None,
    parent_shape: m.InputShape | None,
) -> m.Comparison:
    scores = m.predict(runtime, shape, data.x, "model")
    m.check_classes(scores, data, runtime.outputs[0].name, "eval data")
    parent_scores = None
    if parent is not None and parent_shape is not None:
        parent_scores = m.predict(parent, parent_shape, data.x, "parent")
        if parent_scores.shape != scores.shape:
            raise InvalidInputError(
                f"the parent's first output is {m.dims((None, *parent_scores.shape[1:]))} but "
                f"the model's is {m.dims((None, *scores.shape[1:]))}"
            )
    return m.compare(scores, data.y, parent_scores)


def _drift_reference(
    runtime: ModelRuntime, shape: m.InputShape, data: Dataset, eval_data: Dataset | None
) -> tuple[DriftReference | None, list[str]]:
    output = runtime.outputs[0].name
    scores = m.predict(runtime, shape, data.x, "model")
    classes = m.check_classes(scores, data, output, "reference data")
    class_names = data.class_names or (eval_data.class_names if eval_data is not None else None)
    try:
        reference = build_reference(
            data.x,
            scores,
            data.y,
            feature_names=m.default_names(data.feature_names, data.n_features, "f"),
            class_names=m.default_names(class_names, classes, "class"),
            output_name=output,
        )
    except MetadataError as exc:
        return None, [f"no drift reference from the first output {output!r}: {exc}"]
    return reference, []


def _accuracy_reasons(
    thresholds: ValidationSettings, result: m.Comparison | None, *, has_parent: bool
) -> list[str]:
    reasons = []
    accuracy = None if result is None else result.accuracy
    if thresholds.min_accuracy is not None:
        if accuracy is None:
            reasons.append("min_accuracy is set but no labelled eval data was given")
        elif accuracy < thresholds.min_accuracy - _EPSILON:
            reasons.append(
                f"accuracy {accuracy:.4f} is below min_accuracy {thresholds.min_accuracy}"
            )
    if not has_parent:
        return reasons
    limit = thresholds.max_accuracy_drop
    if result is None:
        reasons.append("a parent model was given but no eval data to compare them on")
    elif result.delta is not None and result.parent_accuracy is not None:
        if -result.delta > limit + _EPSILON:
            reasons.append(
                f"accuracy {result.accuracy:.4f} is {-result.delta:.4f} below the parent's "
                f"{result.parent_accuracy:.4f}; max_accuracy_drop is {limit}"
            )
    elif result.agreement is not None and 1.0 - result.agreement > limit + _EPSILON:
        reasons.append(
            f"eval data has no labels and the model disagrees with its parent on "
            f"{1.0 - result.agreement:.2%} of rows, more than max_accuracy_drop {limit}: "
            "the accuracy drop cannot be bounded"
        )
    return reasons


__all__ = ["ValidationReport", "smoke_tests_from_dict", "validate_model"]
