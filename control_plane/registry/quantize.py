"""Operator-side int8 quantization of a float ONNX model with ``onnxruntime.quantization``.

Theory of operation: :func:`quantize_onnx` takes any float32 ONNX model an
operator uploads and writes its int8 version, choosing the scheme from what it
is given:

- with calibration data, **static** quantization in QDQ format: weights and
  activations int8, one scale per tensor, activation ranges from MinMax
  calibration on ``calibration.x`` (which must look like live inputs: the
  scales are frozen from it);
- without, **dynamic** quantization: int8 weights, activation scales computed
  per batch at run time (``DynamicQuantizeLinear`` + ``MatMulInteger``).

Which operators are quantized is onnxruntime's default for the format. The
model is first checked (parses, is not already quantized, has float32 weights,
loads in onnxruntime, has one ``[batch, F]`` input matching the calibration
data); it is then run through ``quant_pre_process`` (shape inference and graph
optimization, which onnxruntime recommends before quantizing) and, if that
fails, quantized as it is. The result is written to a temporary file, loaded
and run once, and only then moved to ``out_path``, so ``out_path`` is either a
working int8 model or untouched.

:class:`QuantizationRecipe` records what was done, for the release manifest's
``quantization`` field. ``models/sensor/quantize.py`` does the same for the
reference pipeline with that model's fixed choices (explicit operator list,
float input standardization); ``models`` may not import the control plane, and
the control plane quantizes arbitrary uploads, so both exist.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from control_plane.errors import InvalidInputError
from control_plane.registry.datasets import Dataset
from fleetcore.errors import RuntimeLoadError
from fleetcore.runtimes import ModelRuntime, detect_format, load_model

#: Rows per calibration batch fed to the float model.
CALIBRATION_BATCH = 128
#: Node types that mean a model is already quantized.
_QUANTIZED_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}
)
_ONNX_FLOAT = 1  # onnx.TensorProto.FLOAT

Progress = Callable[[str], None]


@dataclass(frozen=True)
class QuantizationRecipe:
    """How an int8 model was made from its float parent."""

    scheme: str  # "int8-static" | "int8-dynamic"
    quant_format: str  # "QDQ" | "QOperator"
    activation_type: str
    weight_type: str
    per_channel: bool
    calibration_method: str | None
    calibration_rows: int | None
    calibration_sha256: str | None
    pre_processed: bool
    onnxruntime_version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantize_onnx(
    float_path: Path,
    out_path: Path,
    *,
    calibration: Dataset | None = None,
    calibration_sha256: str | None = None,
    on_progress: Progress | None = None,
) -> QuantizationRecipe:
    """Quantize ``float_path`` to int8 at ``out_path``: static with calibration, else dynamic.

    Args:
        calibration: representative inputs; enables static QDQ quantization.
        calibration_sha256: digest of the calibration ``.npz`` bytes, recorded
            in the recipe (the registry knows it: artifacts are content-addressed).
        on_progress: called with a short line before each step.

    Raises:
        InvalidInputError: not a float32 ONNX model, already quantized, the
            calibration data does not fit its input, or onnxruntime fails.
    """
    say = on_progress or (lambda _line: None)
    float_path, out_path = Path(float_path), Path(out_path)
    ort, quant = _import_quantization()
    say(f"checking {float_path.name}")
    input_name = _check_float_model(float_path, calibration)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=out_path.parent) as tmp:
        work = Path(tmp)
        source, pre_processed = _pre_process(float_path, work / "pre.onnx", quant, say)
        target = work / "int8.onnx"
        try:
            if calibration is not None:
                say(f"calibrating on {calibration.n_rows} rows and quantizing (static, QDQ)")
                quant.quantize_static(
                    str(source),
                    str(target),
                    _CalibrationReader(input_name, calibration.x),
                    quant_format=quant.QuantFormat.QDQ,
                    activation_type=quant.QuantType.QInt8,
                    weight_type=quant.QuantType.QInt8,
                    per_channel=False,
                    calibrate_method=quant.CalibrationMethod.MinMax,
                )
            else:
                say("quantizing (dynamic: int8 weights, per-batch activation scales)")
                quant.quantize_dynamic(
                    str(source), str(target), weight_type=quant.QuantType.QInt8, per_channel=False
                )
        except Exception as exc:
            raise InvalidInputError(f"onnxruntime could not quantize the model: {exc}") from exc
        say("loading the int8 model")
        _check_output(target, input_name, calibration)
        target.replace(out_path)
    static = calibration is not None
    return QuantizationRecipe(
        scheme="int8-static" if static else "int8-dynamic",
        quant_format="QDQ" if static else "QOperator",
        activation_type="int8" if static else "uint8 (dynamic, per batch)",
        weight_type="int8",
        per_channel=False,
        calibration_method="MinMax" if static else None,
        calibration_rows=calibration.n_rows if calibration is not None else None,
        calibration_sha256=calibration_sha256 if static else None,
        pre_processed=pre_processed,
        onnxruntime_version=str(ort.__version__),
    )


class _CalibrationReader:
    """Feeds calibration rows to the quantizer in fixed-size batches."""

    def __init__(self, input_name: str, x: npt.NDArray[np.float32]) -> None:
        self._name = input_name
        self._x = x
        self._iter = self._batches()

    def _batches(self) -> Iterator[dict[str, npt.NDArray[np.float32]]]:
        for start in range(0, self._x.shape[0], CALIBRATION_BATCH):
            yield {self._name: np.ascontiguousarray(self._x[start : start + CALIBRATION_BATCH])}

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = self._batches()


def _import_quantization() -> tuple[Any, Any]:
    try:
        import onnxruntime  # noqa: PLC0415 - heavy, server-only
        from onnxruntime import quantization  # noqa: PLC0415
    except ImportError as exc:
        raise InvalidInputError(
            "quantization needs onnxruntime and onnx on the control plane (edgefleet[server,onnx])"
        ) from exc
    return onnxruntime, quantization


def _check_float_model(path: Path, calibration: Dataset | None) -> str:
    """Refuse anything but a loadable float32 ONNX model; return its input name."""
    import onnx  # noqa: PLC0415 - heavy, server-only

    try:
        fmt = detect_format(path)
    except RuntimeLoadError as exc:
        raise InvalidInputError(str(exc)) from exc
    if fmt != "onnx":
        raise InvalidInputError(f"{path.name} is a TFLite model; only ONNX can be quantized here")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InvalidInputError(f"{path.name} is not an ONNX model: {_one_line(exc)}") from exc
    if not proto.graph.node:
        raise InvalidInputError(f"{path.name} is not an ONNX model: it has no graph nodes")
    ops = {node.op_type for node in proto.graph.node}
    quantized = sorted(op for op in ops if op in _QUANTIZED_OPS or op.startswith("QLinear"))
    if quantized:
        raise InvalidInputError(f"{path.name} is already quantized (has {', '.join(quantized)})")
    if not any(init.data_type == _ONNX_FLOAT for init in proto.graph.initializer):
        raise InvalidInputError(f"{path.name} has no float32 weights to quantize")
    runtime = _load(path, "the float model")
    if len(runtime.inputs) != 1:
        raise InvalidInputError(
            f"{path.name} has {len(runtime.inputs)} inputs; only single-input models are quantized"
        )
    spec = runtime.inputs[0]
    if spec.dtype != "float32":
        raise InvalidInputError(f"{path.name} input {spec.name!r} is {spec.dtype}, not float32")
    if calibration is not None:
        features = spec.shape[1] if len(spec.shape) == 2 else None
        if features is None or calibration.n_features != features:
            shape = "[" + ", ".join("N" if d is None else str(d) for d in spec.shape) + "]"
            raise InvalidInputError(
                f"calibration x is [{calibration.n_rows}, {calibration.n_features}] but the "
                f"model input {spec.name!r} is {shape}"
            )
    return spec.name


def _pre_process(source: Path, target: Path, quant: Any, say: Progress) -> tuple[Path, bool]:
    """Shape inference and graph optimization; the original model if that fails."""
    say("pre-processing (shape inference, graph optimization)")
    try:
        try:
            quant.quant_pre_process(str(source), str(target))
        except ImportError:
            # Symbolic shape inference needs sympy; ONNX shape inference alone still helps.
            quant.quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
        _load(target, "the pre-processed model")
    except Exception as exc:
        # Pre-processing is an optimization: quantizing the model as given still works.
        say(f"pre-processing failed ({_one_line(exc)}); quantizing the model as given")
        return source, False
    return target, True


def _check_output(path: Path, input_name: str, calibration: Dataset | None) -> None:
    """The int8 model must load and run on a real (or zero) row."""
    runtime = _load(path, "the int8 model")
    spec = runtime.inputs[0]
    if calibration is not None:
        row = calibration.x[:1]
    else:
        row = np.zeros(tuple(1 if d is None else d for d in spec.shape), dtype=np.float32)
    try:
        runtime.run({input_name: row})
    except RuntimeLoadError as exc:
        raise InvalidInputError(f"the int8 model does not run: {exc}") from exc


def _load(path: Path, what: str) -> ModelRuntime:
    try:
        return load_model(path, "onnx", threads=1)
    except RuntimeLoadError as exc:
        raise InvalidInputError(f"{what} does not load in onnxruntime: {exc}") from exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


__all__ = ["QuantizationRecipe", "quantize_onnx"]
