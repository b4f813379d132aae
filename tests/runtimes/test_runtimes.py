"""fleetcore.runtimes against real onnxruntime and real TFLite interpreters."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fleetcore.errors import RuntimeLoadError
from fleetcore.runtimes import (
    ModelRuntime,
    SmokeResult,
    available_runtimes,
    detect_format,
    load_model,
    make_expected_outputs,
    run_smoke_test,
)
from fleetcore.runtimes.tflite import RUNTIME_ENV
from fleetcore.tensors import TensorSpec

ONNX_VARIANTS = ("float", "int8-static", "int8-dynamic")
TFLITE_PACKAGES = {"ai-edge-litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime"}


def _tflite_available() -> bool:
    return bool(set(available_runtimes()) & set(TFLITE_PACKAGES))


needs_tflite = pytest.mark.skipif(not _tflite_available(), reason="no TFLite interpreter")


def _accuracy(runtime: ModelRuntime, features: np.ndarray, labels: np.ndarray) -> float:
    proba = runtime.run({"features": features})["probabilities"]
    return float(np.mean(proba.argmax(axis=1) == labels))


# -- format detection and loading errors ----------------------------------


def test_detect_format_reads_the_tflite_identifier(committed: Any, tmp_path: Path) -> None:
    assert detect_format(committed.tflite) == "tflite"
    other = tmp_path / "model.bin"
    other.write_bytes(b"\x08\x09\x12\x04TFL2 not a flatbuffer")
    assert detect_format(other) == "onnx"


def test_missing_file_raises_runtime_load_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeLoadError, match="cannot read model file"):
        load_model(tmp_path / "absent.onnx")


def test_unknown_format_is_refused(committed: Any) -> None:
    with pytest.raises(RuntimeLoadError, match="unknown model format"):
        load_model(committed.tflite, fmt="tensorrt")


def test_corrupt_onnx_raises_runtime_load_error(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00garbage that is not a protobuf" * 10)
    with pytest.raises(RuntimeLoadError, match="onnxruntime cannot load") as info:
        load_model(corrupt)
    assert info.value.__cause__ is not None
    assert info.value.check == "runtime"


def test_truncated_onnx_raises_runtime_load_error(sensor_build: Any, tmp_path: Path) -> None:
    data = sensor_build.model("float").read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeLoadError):
        load_model(truncated)


@pytest.mark.tflite
@needs_tflite
def test_truncated_tflite_raises_runtime_load_error(committed: Any, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(committed.tflite.read_bytes()[:256])
    assert detect_format(truncated) == "tflite"
    with pytest.raises(RuntimeLoadError, match="cannot load"):
        load_model(truncated)


# -- ONNX variants ----------------------------------------------------------


@pytest.mark.parametrize("variant", ONNX_VARIANTS)
def test_onnx_variant_specs_and_accuracy(sensor_build: Any, variant: str) -> None:
    runtime = load_model(sensor_build.model(variant))
    assert isinstance(runtime, ModelRuntime)
    assert (runtime.format, runtime.runtime) == ("onnx", "onnxruntime")
    assert runtime.inputs == (TensorSpec("features", "float32", (None, 20)),)
    assert runtime.outputs == (TensorSpec("probabilities", "float32", (None, 4)),)
    X, y = sensor_build.heldout
    float_accuracy = _accuracy(load_model(sensor_build.model("float")), X, y)
    assert float_accuracy > 0.85
    assert _accuracy(runtime, X, y) >= float_accuracy - 0.02


@pytest.mark.parametrize("variant", ONNX_VARIANTS)
@pytest.mark.parametrize("batch", [1, 64])
def test_onnx_batch_sizes(sensor_build: Any, variant: str, batch: int) -> None:
    runtime = load_model(sensor_build.model(variant))
    X, _ = sensor_build.heldout
    full = runtime.run({"features": X[:256]})["probabilities"]
    part = runtime.run({"features": X[:batch]})["probabilities"]
    assert part.shape == (batch, 4)
    assert part.dtype == np.float32
    np.testing.assert_allclose(part.sum(axis=1), 1.0, atol=1e-3)
    # Dynamic quantization picks activation scales per batch, so it only agrees
    # approximately with a larger batch; the others are batch-independent.
    atol = 0.05 if variant == "int8-dynamic" else 1e-6
    np.testing.assert_allclose(part, full[:batch], atol=atol)


def test_onnx_run_rejects_bad_feeds(sensor_build: Any) -> None:
    runtime = load_model(sensor_build.model("float"))
    X, _ = sensor_build.heldout
    with pytest.raises(RuntimeLoadError, match="do not match the model inputs"):
        runtime.run({"inputs": X[:2]})
    with pytest.raises(RuntimeLoadError, match="onnxruntime failed"):
        runtime.run({"features": X[:2, :19]})


# -- TFLite -----------------------------------------------------------------


@pytest.mark.tflite
@needs_tflite
def test_committed_tflite_specs_and_accuracy(committed: Any) -> None:
    runtime = load_model(committed.tflite)
    assert isinstance(runtime, ModelRuntime)
    assert runtime.format == "tflite"
    assert runtime.runtime in TFLITE_PACKAGES
    assert runtime.inputs == (TensorSpec("features", "float32", (None, 20)),)
    assert runtime.outputs == (TensorSpec("probabilities", "float32", (None, 4)),)
    X, y = committed.heldout
    float_pred = committed.float_model.predict(X)
    float_accuracy = float(np.mean(float_pred == y))
    proba = runtime.run({"features": X})["probabilities"]
    assert float(np.mean(proba.argmax(axis=1) == y)) >= float_accuracy - 0.02
    assert float(np.mean(proba.argmax(axis=1) == float_pred)) >= 0.97


@pytest.mark.tflite
@needs_tflite
@pytest.mark.parametrize("batch", [1, 64])
def test_tflite_batch_sizes_resize_and_cache(committed: Any, batch: int) -> None:
    runtime = load_model(committed.tflite)
    X, _ = committed.heldout
    full = runtime.run({"features": X[:256]})["probabilities"]
    for _ in range(2):  # the second call reuses the allocated shape
        part = runtime.run({"features": X[:batch]})["probabilities"]
        assert part.shape == (batch, 4)
        assert part.dtype == np.float32
        np.testing.assert_allclose(part, full[:batch], atol=1e-6)


@pytest.mark.tflite
@needs_tflite
def test_tflite_int8_io_is_quantized_for_callers(committed: Any) -> None:
    """int8 in and out: callers pass and receive float32 all the same."""
    assert committed.provenance["files"]["sensor-int8-io.tflite"]["io"] == "int8"
    runtime = load_model(committed.tflite_int8_io)
    assert runtime.inputs[0].dtype == "float32"
    assert runtime.outputs[0].dtype == "float32"
    model = committed.float_model
    X, y = committed.heldout
    standardized = ((X - model.mean) / model.std).astype(np.float32)
    proba = runtime.run({"features": standardized})["probabilities"]
    assert proba.dtype == np.float32
    # int8 softmax outputs have scale 1/256: dequantized values sit on that grid.
    np.testing.assert_allclose(proba * 256, np.round(proba * 256), atol=1e-3)
    float_accuracy = float(np.mean(model.predict(X) == y))
    assert float(np.mean(proba.argmax(axis=1) == y)) >= float_accuracy - 0.02
    # Far out-of-range inputs saturate instead of wrapping around.
    extreme = runtime.run({"features": standardized[:4] * 1e6})["probabilities"]
    assert np.all(np.isfinite(extreme)) and np.all((extreme >= 0) & (extreme <= 1))


@pytest.mark.tflite
@needs_tflite
def test_tflite_bad_shapes_are_refused_then_good_ones_run(committed: Any) -> None:
    runtime = load_model(committed.tflite)
    X, _ = committed.heldout
    with pytest.raises(RuntimeLoadError, match=r"has shape \[3, 19\], the model takes \['N', 20\]"):
        runtime.run({"features": X[:3, :19]})
    with pytest.raises(RuntimeLoadError, match="has shape"):
        runtime.run({"features": X[0]})
    with pytest.raises(RuntimeLoadError, match="do not match the model inputs"):
        runtime.run({"inputs": X[:3]})
    good = runtime.run({"features": X[:3]})["probabilities"]
    assert good.shape == (3, 4)


@pytest.mark.tflite
@pytest.mark.parametrize("package", sorted(TFLITE_PACKAGES))
def test_tflite_runtime_can_be_forced(
    committed: Any, package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RUNTIME_ENV, package)
    if package in available_runtimes():
        assert load_model(committed.tflite).runtime == package
    else:
        with pytest.raises(RuntimeLoadError, match="no TFLite interpreter"):
            load_model(committed.tflite)


@pytest.mark.tflite
def test_unknown_forced_tflite_runtime_is_refused(
    committed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RUNTIME_ENV, "tensorflow")
    with pytest.raises(RuntimeLoadError, match=RUNTIME_ENV):
        load_model(committed.tflite)


# -- available runtimes and smoke tests --------------------------------------


def test_available_runtimes_lists_what_imports() -> None:
    found = available_runtimes()
    for name, module in {"onnxruntime": "onnxruntime", **TFLITE_PACKAGES}.items():
        if importlib.util.find_spec(module) is None:
            assert name not in found
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        assert found["onnxruntime"] == onnxruntime.__version__
    assert all(isinstance(v, str) and v for v in found.values())


@pytest.fixture(params=["int8-static", pytest.param("tflite", marks=pytest.mark.tflite)])
def smoke_runtime(request: pytest.FixtureRequest) -> ModelRuntime:
    """The same smoke checks against an ONNX and a TFLite model."""
    if request.param == "tflite":
        if not _tflite_available():
            pytest.skip("no TFLite interpreter")
        return load_model(request.getfixturevalue("committed").tflite)
    return load_model(request.getfixturevalue("sensor_build").model(request.param))


@pytest.fixture
def vectors(committed: Any) -> list[dict[str, np.ndarray]]:
    X, _ = committed.heldout
    return [{"features": X[:8]}, {"features": X[8:9]}, {"features": X[9:41]}]


def test_smoke_test_passes_on_own_outputs(
    smoke_runtime: ModelRuntime, vectors: list[dict[str, np.ndarray]]
) -> None:
    expected = make_expected_outputs(smoke_runtime, vectors)
    assert [e["probabilities"].shape for e in expected] == [(8, 4), (1, 4), (32, 4)]
    result = run_smoke_test(smoke_runtime, vectors, expected, atol=1e-5, rtol=1e-4)
    assert result == SmokeResult(True, result.max_abs_error, result.detail)
    assert result.max_abs_error <= 1e-5
    assert "3 vectors" in result.detail


def test_smoke_test_fails_on_perturbed_expected_outputs(
    smoke_runtime: ModelRuntime, vectors: list[dict[str, np.ndarray]]
) -> None:
    expected = make_expected_outputs(smoke_runtime, vectors)
    expected[1]["probabilities"] = expected[1]["probabilities"] + np.float32(0.01)
    result = run_smoke_test(smoke_runtime, vectors, expected, atol=1e-3, rtol=1e-3)
    assert not result.passed
    assert result.max_abs_error == pytest.approx(0.01, abs=1e-4)
    assert "vector 1" in result.detail and "out of tolerance" in result.detail
    # The same perturbation passes once the tolerance allows it.
    assert run_smoke_test(smoke_runtime, vectors, expected, atol=0.02, rtol=0.0).passed


def test_smoke_test_refuses_incomplete_or_mismatched_vectors(
    smoke_runtime: ModelRuntime, vectors: list[dict[str, np.ndarray]]
) -> None:
    expected = make_expected_outputs(smoke_runtime, vectors)
    assert not run_smoke_test(smoke_runtime, [], [], atol=1.0, rtol=1.0).passed
    short = run_smoke_test(smoke_runtime, vectors, expected[:2], atol=1.0, rtol=1.0)
    assert not short.passed and "expected outputs" in short.detail
    renamed = [{"scores": e["probabilities"]} for e in expected]
    missing = run_smoke_test(smoke_runtime, vectors, renamed, atol=1.0, rtol=1.0)
    assert not missing.passed and "missing" in missing.detail
    wrong_shape = [{"probabilities": e["probabilities"][:, :3]} for e in expected]
    shaped = run_smoke_test(smoke_runtime, vectors, wrong_shape, atol=1.0, rtol=1.0)
    assert not shaped.passed and "shape" in shaped.detail
    bad_feeds = [{"features": v["features"][:, :5]} for v in vectors]
    failed = run_smoke_test(smoke_runtime, bad_feeds, expected, atol=1.0, rtol=1.0)
    assert not failed.passed and failed.max_abs_error == float("inf")
