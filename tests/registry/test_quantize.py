"""Operator-side int8 quantization with real onnxruntime."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from control_plane.errors import InvalidInputError
from control_plane.registry import Dataset, quantize_onnx, save_dataset
from fleetcore.runtimes import load_model
from models.sensor import recipe
from tests.conftest import TEST_SAMPLES, TEST_SEED

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def calibration() -> Dataset:
    return Dataset(x=recipe.make_splits(TEST_SAMPLES, TEST_SEED).calibration)


def _accuracy(path: Path, heldout: tuple[np.ndarray, np.ndarray]) -> float:
    x, y = heldout
    proba = load_model(path).run({"features": x})["probabilities"]
    return float(np.mean(proba.argmax(axis=1) == y))


def _ops(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_static_quantization_is_int8_qdq_and_accurate(
    sensor_build: Any, calibration: Dataset, tmp_path: Path
) -> None:
    digest = hashlib.sha256(
        save_dataset(tmp_path / "calibration.npz", calibration).read_bytes()
    ).hexdigest()
    steps: list[str] = []
    out = tmp_path / "out" / "int8.onnx"
    recipe_ = quantize_onnx(
        sensor_build.model("float"),
        out,
        calibration=calibration,
        calibration_sha256=digest,
        on_progress=steps.append,
    )
    assert recipe_.to_dict() == {
        "scheme": "int8-static",
        "quant_format": "QDQ",
        "activation_type": "int8",
        "weight_type": "int8",
        "per_channel": False,
        "calibration_method": "MinMax",
        "calibration_rows": calibration.n_rows,
        "calibration_sha256": digest,
        "pre_processed": recipe_.pre_processed,
        "onnxruntime_version": ort.__version__,
    }
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(out)
    weights = [
        i for i in onnx.load(str(out)).graph.initializer if i.data_type == onnx.TensorProto.INT8
    ]
    assert weights, "no int8 weights in the static model"
    float_accuracy = _accuracy(sensor_build.model("float"), sensor_build.heldout)
    assert _accuracy(out, sensor_build.heldout) >= float_accuracy - 0.02
    assert out.stat().st_size < sensor_build.model("float").stat().st_size
    assert any("calibrating on 1000 rows" in step for step in steps)
    assert sorted(p.name for p in out.parent.iterdir()) == ["int8.onnx"]  # no temp files left


def test_dynamic_quantization_is_int8_and_accurate(sensor_build: Any, tmp_path: Path) -> None:
    out = tmp_path / "int8-dynamic.onnx"
    made = quantize_onnx(sensor_build.model("float"), out)
    assert (made.scheme, made.quant_format) == ("int8-dynamic", "QOperator")
    assert made.calibration_rows is None and made.calibration_sha256 is None
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= _ops(out)
    float_accuracy = _accuracy(sensor_build.model("float"), sensor_build.heldout)
    assert _accuracy(out, sensor_build.heldout) >= float_accuracy - 0.02


def test_quantized_models_are_refused_as_input(sensor_build: Any, tmp_path: Path) -> None:
    out = tmp_path / "again.onnx"
    for variant in ("int8-static", "int8-dynamic"):
        with pytest.raises(InvalidInputError, match="already quantized"):
            quantize_onnx(sensor_build.model(variant), out)
    assert not out.exists()


@pytest.mark.parametrize(
    "content",
    [b"a text file\n", b"", b"\x00garbage that is not a protobuf" * 10],
    ids=["text", "empty", "corrupt"],
)
def test_non_onnx_uploads_are_refused(tmp_path: Path, content: bytes) -> None:
    upload = tmp_path / "upload.onnx"
    upload.write_bytes(content)
    with pytest.raises(InvalidInputError, match=r"upload\.onnx is not an ONNX model"):
        quantize_onnx(upload, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_tflite_models_are_refused(committed: Any, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="is a TFLite model"):
        quantize_onnx(committed.tflite, tmp_path / "out.onnx")


def test_calibration_with_the_wrong_feature_count_is_refused(
    sensor_build: Any, calibration: Dataset, tmp_path: Path
) -> None:
    narrow = Dataset(x=calibration.x[:, :5])
    out = tmp_path / "int8.onnx"
    out.write_bytes(b"previous")
    with pytest.raises(InvalidInputError, match=r"calibration x is \[1000, 5\].*\[N, 20\]"):
        quantize_onnx(sensor_build.model("float"), out, calibration=narrow)
    assert out.read_bytes() == b"previous"


def test_a_model_without_float_weights_is_refused(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["features"], ["out"])],
        "no-weights",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = tmp_path / "relu.onnx"
    onnx.save(model, str(path))
    with pytest.raises(InvalidInputError, match="no float32 weights"):
        quantize_onnx(path, tmp_path / "out.onnx")
