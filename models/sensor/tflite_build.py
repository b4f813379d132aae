"""Optional step: rebuild the committed int8 TFLite models with TensorFlow.

Theory of operation: the trained numpy weights (retrained from the fixed
recipe, or loaded with ``--weights``) are copied into an identical Keras
network (``Normalization`` with the model's mean and variance, then the dense
layers), checked against :meth:`MLP.predict_proba`, and converted with
post-training int8 quantization calibrated on the recipe's calibration split.

Two files come out of one build:

``sensor-int8.tflite``
    float32 ``features`` in, float32 ``probabilities`` out. Every dense layer
    and the softmax run in int8; the standardization (``SUB``, ``MUL``) stays
    float32. Why: int8 has one scale per tensor, and the raw features span
    kurtosis values near 3 and speeds near 1500 rpm, so quantizing the raw
    input zeroes the small features (fully int8, accuracy falls to about 50 %).
    Quantizing after standardization loses almost nothing.
``sensor-int8-io.tflite``
    integer-only, int8 in and out, for accelerators that accept only int8
    I/O. It takes *standardized* features (the mean and std are in the
    provenance file); :mod:`fleetcore.runtimes` quantizes and dequantizes for
    callers.

``sensor-int8.tflite.json`` records the provenance: weights digest, recipe
seed and sample count, TensorFlow version, file digests and held-out accuracy.
Run: ``python -m models.sensor.tflite_build [--out DIR] [--weights NPZ]``
(needs ``edgefleet[models-tflite]``; nothing else in the project needs
TensorFlow).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.sensor import recipe
from models.sensor.data import CLASS_NAMES, FEATURE_NAMES
from models.sensor.train import MLP

ARTIFACTS = Path(__file__).parent / "artifacts"
TFLITE_NAME = "sensor-int8.tflite"
TFLITE_IO_NAME = "sensor-int8-io.tflite"
WEIGHTS_NAME = "sensor-weights.npz"
PROVENANCE_NAME = "sensor-int8.tflite.json"


def _tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf  # noqa: PLC0415  (optional, heavy dependency)

    return tf


def _keras_model(tf: Any, model: MLP, *, standardize: bool) -> Any:
    inputs = tf.keras.Input(shape=(model.n_features,), name="features", dtype="float32")
    h = inputs
    if standardize:
        variance = np.square(model.std.astype(np.float64))
        h = tf.keras.layers.Normalization(mean=model.mean, variance=variance, name="standardize")(h)
    last = len(model.weights) - 1
    for i, (w, b) in enumerate(zip(model.weights, model.biases, strict=True)):
        dense = tf.keras.layers.Dense(
            w.shape[1], activation="softmax" if i == last else "relu", name=f"dense{i}"
        )
        h = dense(h)
        dense.set_weights([w, b])
    return tf.keras.Model(inputs, {"probabilities": h})


def _convert(
    tf: Any,
    keras_model: Any,
    calibration: npt.NDArray[np.float32],
    *,
    int8_io: bool,
) -> bytes:
    def representative() -> Iterator[list[npt.NDArray[np.float32]]]:
        for row in calibration:
            yield [row[None, :]]

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
            return bytes(converter.convert())
        # Keep the standardization float32 (see the module docstring).
        options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=["SUB", "MUL"])
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative, debug_options=options
        )
        return bytes(debugger.get_nondebug_quantized_model())


def _predict(tf: Any, content: bytes, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Run a TFLite model with TensorFlow's own interpreter (float in/out)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interp = tf.lite.Interpreter(model_content=content)
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], list(X.shape))
    interp.allocate_tensors()
    scale, zero = inp["quantization"]
    if inp["dtype"] == np.int8:
        X = np.clip(np.round(X / scale) + zero, -128, 127).astype(np.int8)
    interp.set_tensor(inp["index"], X)
    interp.invoke()
    result = interp.get_tensor(out["index"])
    scale, zero = out["quantization"]
    if out["dtype"] == np.int8:
        result = (result.astype(np.float32) - zero) * scale
    return np.asarray(result, dtype=np.float32)


def build(
    out: Path,
    *,
    samples: int = recipe.DEFAULT_SAMPLES,
    seed: int = recipe.DEFAULT_SEED,
    weights: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Build both TFLite files and the provenance record into ``out``."""
    tf = _tf()
    splits = recipe.make_splits(samples, seed)
    if weights is None:
        model, report = recipe.fit(splits, seed)
        log(f"trained in {report.seconds:.1f} s, train accuracy {report.train_accuracy:.4f}")
        model.save(out / WEIGHTS_NAME)
    else:
        model = MLP.load(weights)
        log(f"loaded weights from {weights}")
    log(f"weights sha256 {model.digest()}")

    X_test, y_test = splits.heldout
    reference = model.predict_proba(X_test)
    keras_float = _keras_model(tf, model, standardize=True)
    mismatch = float(
        np.abs(keras_float.predict(X_test, verbose=0)["probabilities"] - reference).max()
    )
    if mismatch > 1e-4:
        raise RuntimeError(f"Keras rebuild differs from the numpy model by {mismatch:.2e}")

    standardized = ((splits.calibration - model.mean) / model.std).astype(np.float32)
    files = {
        TFLITE_NAME: _convert(tf, keras_float, splits.calibration, int8_io=False),
        TFLITE_IO_NAME: _convert(
            tf, _keras_model(tf, model, standardize=False), standardized, int8_io=True
        ),
    }
    test_inputs = {
        TFLITE_NAME: X_test,
        TFLITE_IO_NAME: ((X_test - model.mean) / model.std).astype(np.float32),
    }
    float_pred = reference.argmax(axis=1)
    record: dict[str, Any] = {
        "format": "edgefleet.model-provenance/1",
        "model": "sensor",
        "feature_names": list(FEATURE_NAMES),
        "class_names": list(CLASS_NAMES),
        "recipe": {"samples": samples, "seed": seed, "heldout_samples": len(y_test)},
        "calibration_samples": len(splits.calibration),
        "weights": {"file": WEIGHTS_NAME, "sha256": model.digest()},
        "standardization": {
            "mean": [float(v) for v in model.mean],
            "std": [float(v) for v in model.std],
        },
        "tensorflow_version": str(tf.__version__),
        "float_accuracy": round(float(np.mean(float_pred == y_test)), 4),
        "files": {},
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (out / name).write_bytes(content)
        pred = _predict(tf, content, test_inputs[name]).argmax(axis=1)
        entry = {
            "sha256": hashlib.sha256(content).hexdigest(),
            "bytes": len(content),
            "input": "raw features" if name == TFLITE_NAME else "standardized features",
            "io": "float32" if name == TFLITE_NAME else "int8",
            "quantization": (
                "post-training int8 weights and activations; standardization float32"
                if name == TFLITE_NAME
                else "post-training full-integer int8, including input and output"
            ),
            "accuracy": round(float(np.mean(pred == y_test)), 4),
            "agreement_with_float": round(float(np.mean(pred == float_pred)), 4),
        }
        record["files"][name] = entry
        log(f"wrote {name}: {len(content)} bytes, held-out accuracy {entry['accuracy']:.4f}")
    (out / PROVENANCE_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    log(f"wrote {PROVENANCE_NAME}")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ARTIFACTS)
    parser.add_argument("--samples", type=int, default=recipe.DEFAULT_SAMPLES)
    parser.add_argument("--seed", type=int, default=recipe.DEFAULT_SEED)
    parser.add_argument("--weights", type=Path, help="use these weights instead of retraining")
    args = parser.parse_args(argv)
    try:
        build(args.out, samples=args.samples, seed=args.seed, weights=args.weights)
    except ImportError as exc:
        print(f"error: TensorFlow is needed for this step ({exc})", file=sys.stderr)
        return 1
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
