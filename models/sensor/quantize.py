"""int8 quantization of the float ONNX model with ``onnxruntime.quantization``.

Theory of operation: two recipes, both symmetric int8 weights.

- **static** (QDQ format): activations get fixed int8 scales found by running
  calibration batches through the float model (MinMax calibration).
  ``QuantizeLinear``/``DequantizeLinear`` pairs wrap each quantized tensor, so
  any runtime that fuses QDQ patterns (onnxruntime, TFLite converters) runs
  integer kernels. Needs representative calibration data.
- **dynamic**: weights are int8 offline; activation scales are computed per
  batch at run time (``DynamicQuantizeLinear`` + ``MatMulInteger``). Needs no
  calibration data, costs a little per-batch work.

The input standardization (``Sub``/``Div``) stays float in both, so raw sensor
readings with large magnitudes (rpm, voltage) never lose precision.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from models.sensor.export import INPUT_NAME

#: Rows per calibration batch fed to the float model.
CALIBRATION_BATCH = 128


class SensorCalibrationReader(CalibrationDataReader):  # type: ignore[misc]
    """Feeds calibration features to the quantizer in fixed-size batches."""

    def __init__(self, features: npt.NDArray[np.float32], batch: int = CALIBRATION_BATCH) -> None:
        if features.ndim != 2 or features.shape[0] == 0:
            raise ValueError("calibration features must be a non-empty [n, F] array")
        self._features = np.ascontiguousarray(features, dtype=np.float32)
        self._batch = batch
        self._iter: Iterator[dict[str, npt.NDArray[np.float32]]] = self._batches()

    def _batches(self) -> Iterator[dict[str, npt.NDArray[np.float32]]]:
        for start in range(0, self._features.shape[0], self._batch):
            yield {INPUT_NAME: self._features[start : start + self._batch]}

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = self._batches()


def quantize_int8_static(
    float_model: Path, out: Path, calibration: npt.NDArray[np.float32]
) -> Path:
    """Static int8 QDQ quantization calibrated on ``calibration`` features."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_quantizer():
        quantize_static(
            str(float_model),
            str(out),
            SensorCalibrationReader(calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=False,
            calibrate_method=CalibrationMethod.MinMax,
            op_types_to_quantize=["MatMul", "Add", "Relu"],
        )
    return out


def quantize_int8_dynamic(float_model: Path, out: Path) -> Path:
    """Dynamic int8 quantization: int8 weights, per-batch activation scales."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_quantizer():
        quantize_dynamic(
            str(float_model), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"]
        )
    return out


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Silence the quantizer's advice to pre-process shapes (this graph is already minimal)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
