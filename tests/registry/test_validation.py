"""The validation gate against real onnxruntime and TFLite models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from control_plane.config import ValidationSettings
from control_plane.errors import InvalidInputError
from control_plane.registry import (
    Dataset,
    ValidationReport,
    quantize_onnx,
    smoke_tests_from_dict,
    validate_model,
)
from fleetcore.drift import DriftReference
from fleetcore.runtimes import available_runtimes, load_model, run_smoke_test
from models.sensor import recipe
from models.sensor.data import CLASS_NAMES, FEATURE_NAMES
from tests.conftest import TEST_SAMPLES, TEST_SEED

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

needs_tflite = pytest.mark.skipif(
    not set(available_runtimes()) - {"onnxruntime"}, reason="no TFLite interpreter"
)
GATE = ValidationSettings()


@pytest.fixture(scope="module")
def data() -> dict[str, Dataset]:
    splits = recipe.make_splits(TEST_SAMPLES, TEST_SEED)
    x_ref, y_ref = splits.reference
    x_eval, y_eval = splits.heldout
    return {
        "eval": Dataset(x=x_eval, y=y_eval),
        "reference": Dataset(
            x=x_ref, y=y_ref, feature_names=FEATURE_NAMES, class_names=CLASS_NAMES
        ),
        "calibration": Dataset(x=splits.calibration),
    }


def _validate(model: Path, **kwargs: Any) -> ValidationReport:
    return validate_model(model, thresholds=kwargs.pop("thresholds", GATE), **kwargs)


def _tiny_onnx(
    path: Path,
    *,
    features: int = 4,
    classes: int = 3,
    batch: int | str = "batch",
    softmax: bool = True,
    noise: bool = False,
    log: bool = False,
) -> Path:
    """A one-layer classifier; ``noise`` adds an unseeded RandomUniformLike to the logits,
    ``log`` takes their logarithm (NaN wherever a logit is negative)."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.standard_normal((features, classes)).astype(np.float32), "w")
    ]
    nodes = [helper.make_node("MatMul", ["features", "w"], ["logits0"])]
    last = "logits0"
    if noise:
        nodes.append(helper.make_node("RandomUniformLike", [last], ["noise"], high=5.0))
        nodes.append(helper.make_node("Add", [last, "noise"], ["logits1"]))
        last = "logits1"
    if log:
        nodes.append(helper.make_node("Log", [last], ["logits2"]))
        last = "logits2"
    if softmax:
        nodes.append(helper.make_node("Softmax", [last], ["probabilities"], axis=-1))
    else:
        nodes.append(helper.make_node("Identity", [last], ["probabilities"]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch, features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [batch, classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _tiny_data(rows: int = 300, features: int = 4, classes: int = 3) -> Dataset:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((rows, features)).astype(np.float32)
    return Dataset(x=x, y=rng.integers(0, classes, rows))


# -- the happy path ---------------------------------------------------------------


def test_a_good_int8_model_passes_against_its_parent(sensor_build: Any, data: Any) -> None:
    report = _validate(
        sensor_build.model("int8-static"),
        eval_data=data["eval"],
        reference_data=data["reference"],
        parent_path=sensor_build.model("float"),
    )
    assert report.passed and report.reasons == ()
    assert (report.format, report.runtime) == ("onnx", "onnxruntime")
    assert report.size_bytes == sensor_build.model("int8-static").stat().st_size
    assert report.io_schema == {
        "inputs": [{"name": "features", "dtype": "float32", "shape": [None, 20]}],
        "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [None, 4]}],
    }
    # The same numbers the pipeline measured independently on the same rows.
    assert report.accuracy == pytest.approx(sensor_build.variant("int8-static")["accuracy"])
    assert report.parent_accuracy == pytest.approx(sensor_build.variant("float")["accuracy"])
    assert report.accuracy is not None and report.parent_accuracy is not None
    assert report.accuracy_delta == pytest.approx(report.accuracy - report.parent_accuracy)
    assert report.agreement_with_parent is not None and report.agreement_with_parent >= 0.96
    assert GATE.max_latency_p95_ms is not None
    assert 0 < report.latency_p50_ms <= report.latency_p95_ms < GATE.max_latency_p95_ms
    assert report.eval_rows == data["eval"].n_rows
    assert report.thresholds == GATE.model_dump()
    # The drift reference is the pipeline's: same rows, same shipped model.
    assert isinstance(report.drift_reference, DriftReference)
    assert report.drift_reference_sha256 == sensor_build.summary["drift_reference"]["sha256"]


def test_report_is_json_and_gives_back_its_smoke_tests(sensor_build: Any, data: Any) -> None:
    model = sensor_build.model("int8-dynamic")
    report = _validate(model, eval_data=data["eval"], reference_data=data["reference"])
    stored = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert stored["passed"] is True and stored["accuracy"] == report.accuracy
    assert stored["drift_reference"]["sha256"] == report.drift_reference_sha256
    assert stored["drift_reference"]["length"] == len(report.drift_reference.to_bytes())  # type: ignore[union-attr]
    assert "features" not in stored["drift_reference"]
    smoke = smoke_tests_from_dict(stored)
    assert smoke.to_dict() == report.smoke_tests.to_dict()
    # What a device does before activation, on a fresh load of the artifact.
    result = run_smoke_test(
        load_model(model),
        [v.inputs for v in smoke.vectors],
        [v.expected for v in smoke.vectors],
        atol=smoke.atol,
        rtol=smoke.rtol,
    )
    assert result.passed, result.detail
    with pytest.raises(InvalidInputError, match="no smoke tests"):
        smoke_tests_from_dict({"passed": True})


def test_smoke_vectors_are_real_reference_rows(sensor_build: Any, data: Any) -> None:
    gate = ValidationSettings(smoke_vectors=5, smoke_atol=1e-3, smoke_rtol=1e-4)
    report = _validate(
        sensor_build.model("int8-static"), thresholds=gate, reference_data=data["reference"]
    )
    smoke = report.smoke_tests
    assert len(smoke.vectors) == 5 and (smoke.atol, smoke.rtol) == (1e-3, 1e-4)
    rows = {row.tobytes() for row in data["reference"].x}
    for vector in smoke.vectors:
        (features,) = vector.inputs.values()
        assert features.shape == (1, 20) and features.dtype == np.float32
        assert features[0].tobytes() in rows
        assert vector.expected["probabilities"].shape == (1, 4)
    assert report.smoke_check.passed
    # Deterministic: validating again yields identical vectors.
    again = _validate(
        sensor_build.model("int8-static"), thresholds=gate, reference_data=data["reference"]
    )
    assert again.to_dict()["smoke_tests"] == report.to_dict()["smoke_tests"]


def test_without_data_smoke_inputs_are_seeded_and_nothing_else_is_claimed(
    sensor_build: Any,
) -> None:
    report = _validate(sensor_build.model("float"))
    assert report.passed
    assert len(report.smoke_tests.vectors) == GATE.smoke_vectors
    assert report.accuracy is None and report.parent_accuracy is None
    assert report.drift_reference is None and report.eval_rows is None


@pytest.mark.tflite
@needs_tflite
def test_the_committed_tflite_model_validates(committed: Any, tmp_path: Path) -> None:
    from models.sensor.export import export_onnx

    parent = export_onnx(committed.float_model, tmp_path / "float.onnx")
    x, y = committed.heldout
    report = _validate(
        committed.tflite,
        eval_data=Dataset(x=x, y=y),
        reference_data=Dataset(x=x[:1000], feature_names=FEATURE_NAMES, class_names=CLASS_NAMES),
        parent_path=parent,
    )
    assert report.passed, report.reasons
    assert report.format == "tflite" and report.runtime in ("ai-edge-litert", "tflite-runtime")
    assert report.accuracy is not None and report.accuracy_delta is not None
    assert report.accuracy_delta >= -0.02
    assert report.drift_reference is not None and report.drift_reference.accuracy is None
    smoke = report.smoke_tests
    fresh = run_smoke_test(
        load_model(committed.tflite),
        [v.inputs for v in smoke.vectors],
        [v.expected for v in smoke.vectors],
        atol=smoke.atol,
        rtol=smoke.rtol,
    )
    assert fresh.passed


def test_a_fixed_batch_model_is_fed_in_its_batch_size(tmp_path: Path) -> None:
    model = _tiny_onnx(tmp_path / "fixed.onnx", batch=1)
    free = _tiny_onnx(tmp_path / "free.onnx")
    dataset = _tiny_data(rows=37)
    fixed_report = _validate(model, eval_data=dataset, reference_data=dataset)
    free_report = _validate(free, eval_data=dataset, reference_data=dataset)
    assert fixed_report.passed and fixed_report.accuracy == free_report.accuracy
    assert fixed_report.drift_reference_sha256 == free_report.drift_reference_sha256


# -- the gate says no ------------------------------------------------------------------


def test_the_gate_rejects_an_int8_model_that_lost_accuracy(
    sensor_build: Any, data: Any, tmp_path: Path
) -> None:
    """Calibrated on readings from the wrong place: activation ranges far off real data."""
    calibration = data["calibration"].x
    spread = calibration.std(axis=0)
    off = Dataset(x=calibration + 20.0 * spread)
    bad = tmp_path / "bad-int8.onnx"
    quantize_onnx(sensor_build.model("float"), bad, calibration=off)
    report = _validate(
        bad,
        eval_data=data["eval"],
        reference_data=data["reference"],
        parent_path=sensor_build.model("float"),
    )
    assert not report.passed
    assert report.accuracy_delta is not None and report.accuracy_delta < -GATE.max_accuracy_drop
    assert len(report.reasons) == 1
    assert "accuracy" in report.reasons[0] and "max_accuracy_drop" in report.reasons[0]
    assert report.to_dict()["reasons"] == list(report.reasons)
    # The same model, checked without labels: disagreement with the parent catches it.
    unlabelled = Dataset(x=data["eval"].x)
    blind = _validate(bad, eval_data=unlabelled, parent_path=sensor_build.model("float"))
    assert blind.accuracy is None and blind.agreement_with_parent is not None
    assert any("disagrees with its parent" in r for r in blind.reasons)
    good = _validate(
        sensor_build.model("int8-static"),
        eval_data=unlabelled,
        parent_path=sensor_build.model("float"),
    )
    assert good.passed, good.reasons


def test_min_accuracy_and_unverifiable_thresholds_fail_closed(sensor_build: Any, data: Any) -> None:
    model = sensor_build.model("int8-static")
    strict = ValidationSettings(min_accuracy=0.99)
    report = _validate(model, thresholds=strict, eval_data=data["eval"])
    assert report.reasons == (f"accuracy {report.accuracy:.4f} is below min_accuracy 0.99",)
    report = _validate(model, thresholds=strict, eval_data=Dataset(x=data["eval"].x))
    assert report.reasons == ("min_accuracy is set but no labelled eval data was given",)
    report = _validate(model, parent_path=sensor_build.model("float"))
    assert report.reasons == ("a parent model was given but no eval data to compare them on",)


def test_latency_and_size_thresholds_produce_reasons(sensor_build: Any) -> None:
    model = sensor_build.model("int8-static")
    tight = ValidationSettings(max_latency_p95_ms=1e-6, max_size_bytes=1000, latency_runs=10)
    report = _validate(model, thresholds=tight)
    assert not report.passed and len(report.reasons) == 2
    assert (
        report.reasons[0].startswith("p95 latency")
        and "max_latency_p95_ms 1e-06" in (report.reasons[0])
    )
    size = model.stat().st_size
    assert report.reasons[1] == f"size {size} bytes exceeds max_size_bytes 1000"
    loose = ValidationSettings(max_latency_p95_ms=None, max_size_bytes=size)
    assert _validate(model, thresholds=loose).passed


def test_a_non_deterministic_model_is_caught(tmp_path: Path) -> None:
    model = _tiny_onnx(tmp_path / "noisy.onnx", noise=True)
    report = _validate(model)
    assert not report.passed and not report.smoke_check.passed
    assert report.reasons[0].startswith("non-deterministic: smoke outputs not reproduced")
    steady = _validate(_tiny_onnx(tmp_path / "steady.onnx"))
    assert steady.passed and steady.smoke_check.max_abs_error == 0.0


def test_a_model_with_non_finite_outputs_is_caught(tmp_path: Path) -> None:
    report = _validate(_tiny_onnx(tmp_path / "nan.onnx", log=True, softmax=False))
    assert not report.passed
    assert report.reasons[0].startswith("non-finite outputs: smoke outputs not reproduced")
    assert json.loads(json.dumps(report.to_dict()))["smoke_check"]["max_abs_error"] is None


def test_logit_outputs_cannot_give_a_drift_reference(tmp_path: Path) -> None:
    model = _tiny_onnx(tmp_path / "logits.onnx", softmax=False)
    report = _validate(model, eval_data=_tiny_data(), reference_data=_tiny_data())
    assert report.accuracy is not None and report.drift_reference is None
    assert len(report.reasons) == 1 and report.reasons[0].startswith("no drift reference")


# -- bad input raises ------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"\x00garbage that is not a protobuf" * 10, b"just some notes\n", b""],
    ids=["corrupt", "text", "empty"],
)
def test_files_that_are_not_models_are_invalid_input(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "upload.onnx"
    path.write_bytes(content)
    with pytest.raises(InvalidInputError, match="not a loadable ONNX/TFLite model"):
        _validate(path)


@pytest.mark.tflite
@needs_tflite
def test_a_truncated_tflite_model_is_invalid_input(committed: Any, tmp_path: Path) -> None:
    path = tmp_path / "truncated.tflite"
    path.write_bytes(committed.tflite.read_bytes()[:300])
    with pytest.raises(InvalidInputError, match="not a loadable ONNX/TFLite model"):
        _validate(path)
    with pytest.raises(InvalidInputError, match="not a loadable"):
        _validate(committed.tflite, fmt="onnx")


def test_a_parent_that_is_not_a_model_is_invalid_input(sensor_build: Any, tmp_path: Path) -> None:
    junk = tmp_path / "parent.onnx"
    junk.write_text("not a model")
    with pytest.raises(InvalidInputError, match="the parent model is not a loadable"):
        _validate(sensor_build.model("int8-static"), parent_path=junk)


def test_data_with_the_wrong_feature_count_is_invalid_input(
    sensor_build: Any, data: Any, tmp_path: Path
) -> None:
    model = sensor_build.model("int8-static")
    narrow = Dataset(x=data["eval"].x[:, :12], y=data["eval"].y)
    with pytest.raises(InvalidInputError, match=r"eval data x is \[1000, 12\].*\[N, 20\]"):
        _validate(model, eval_data=narrow)
    with pytest.raises(InvalidInputError, match=r"reference data x is \[1000, 12\].*\[N, 20\]"):
        _validate(model, reference_data=narrow)
    other_parent = _tiny_onnx(tmp_path / "parent.onnx", features=4)
    with pytest.raises(InvalidInputError, match=r"parent input 'features' \[N, 4\].*\[N, 20\]"):
        _validate(model, eval_data=data["eval"], parent_path=other_parent)


def test_labels_and_names_that_do_not_fit_the_model_are_invalid_input(
    sensor_build: Any, data: Any, tmp_path: Path
) -> None:
    model = sensor_build.model("int8-static")
    x = data["eval"].x
    with pytest.raises(InvalidInputError, match=r"labels go up to 6 .* \[N, 4\]"):
        _validate(model, eval_data=Dataset(x=x, y=np.full(len(x), 6)))
    three = Dataset(x=x, class_names=("a", "b", "c"))
    with pytest.raises(InvalidInputError, match=r"names 3 classes .* \[N, 4\]"):
        _validate(model, reference_data=three)
    renamed = Dataset(x=x, feature_names=tuple(reversed(FEATURE_NAMES)))
    with pytest.raises(InvalidInputError, match="disagree on feature_names"):
        _validate(model, eval_data=renamed, reference_data=data["reference"])
    wider_parent = _tiny_onnx(tmp_path / "parent.onnx", features=20, classes=3)
    with pytest.raises(
        InvalidInputError, match=r"parent's first output is \[N, 3\] but the model's is \[N, 4\]"
    ):
        _validate(model, eval_data=data["eval"], parent_path=wider_parent)
