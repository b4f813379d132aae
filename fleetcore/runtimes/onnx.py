"""ONNX models through onnxruntime's CPU execution provider.

Theory of operation: one ``InferenceSession`` per loaded model, restricted to
``threads`` intra-op threads and one inter-op thread, logging only errors.
Input and output specs come from the session; symbolic dimensions become
``None``. :meth:`OnnxModel.run` checks that the feeds name exactly the model's
inputs, casts each to the declared dtype, and converts any onnxruntime error
into :class:`~fleetcore.errors.RuntimeLoadError`. onnxruntime sessions are safe
to call from several threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fleetcore.errors import RuntimeLoadError
from fleetcore.tensors import DTYPES, TensorSpec

#: onnxruntime element types -> numpy dtype names that TensorSpec allows.
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
}


def _import_ort() -> Any:
    try:
        import onnxruntime  # noqa: PLC0415  (lazy: devices may run TFLite only)
    except ImportError as exc:
        raise RuntimeLoadError(
            "onnxruntime is not installed; install edgefleet[onnx] to run ONNX models"
        ) from exc
    return onnxruntime


def onnxruntime_version() -> str | None:
    """The installed onnxruntime version, or ``None`` if it cannot be imported."""
    try:
        ort = _import_ort()
    except RuntimeLoadError:
        return None
    return str(ort.__version__)


def _specs(args: Sequence[Any], kind: str) -> tuple[TensorSpec, ...]:
    specs = []
    for arg in args:
        dtype = _ORT_TYPES.get(arg.type)
        if dtype is None:
            raise RuntimeLoadError(f"model {kind} {arg.name!r} has unsupported type {arg.type}")
        shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in arg.shape)
        specs.append(TensorSpec(name=arg.name, dtype=dtype, shape=shape))
    return tuple(specs)


class OnnxModel:
    """A model loaded into onnxruntime; satisfies :class:`ModelRuntime`."""

    format = "onnx"
    runtime = "onnxruntime"

    def __init__(self, session: Any, version: str) -> None:
        self._session = session
        self.runtime_version = version
        self.inputs = _specs(session.get_inputs(), "input")
        self.outputs = _specs(session.get_outputs(), "output")
        self._output_names = [spec.name for spec in self.outputs]
        # ``InferenceSession.run`` re-validates the feed names in Python on every
        # call; the binding underneath does the same work without that check.
        # Callers of :meth:`run_validated` have matched the names already. A
        # future onnxruntime without the attribute falls back to the public call.
        binding = getattr(session, "_sess", None)
        self._fast_run = session.run if binding is None else binding.run

    def __repr__(self) -> str:
        return f"OnnxModel(inputs={[s.name for s in self.inputs]}, runtime={self.runtime_version})"

    def run(self, feeds: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Run one batch; raises RuntimeLoadError on bad feeds or a runtime failure."""
        names = {spec.name for spec in self.inputs}
        if set(feeds) != names:
            raise RuntimeLoadError(
                f"feeds {sorted(feeds)} do not match the model inputs {sorted(names)}"
            )
        try:
            prepared = {
                spec.name: np.ascontiguousarray(feeds[spec.name], dtype=DTYPES[spec.dtype])
                for spec in self.inputs
            }
            results = self._session.run(self._output_names, prepared)
        except Exception as exc:
            raise RuntimeLoadError(f"onnxruntime failed to run the model: {exc}") from exc
        return {
            name: np.asarray(value) for name, value in zip(self._output_names, results, strict=True)
        }

    def run_validated(self, feeds: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Run feeds the caller has already matched to :attr:`inputs` (names, dtypes).

        The serving fast path: no name check and no conversion, which cost
        more than the inference itself for small models.
        """
        try:
            results = self._fast_run(self._output_names, feeds, None)
        except Exception as exc:
            raise RuntimeLoadError(f"onnxruntime failed to run the model: {exc}") from exc
        return dict(zip(self._output_names, results, strict=True))


def load_onnx(path: Path, *, threads: int = 1) -> OnnxModel:
    """Load an ONNX model file into a CPU onnxruntime session."""
    ort = _import_ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeLoadError(f"onnxruntime cannot load {path}: {first_line}") from exc
    return OnnxModel(session, str(ort.__version__))


__all__ = ["OnnxModel", "load_onnx", "onnxruntime_version"]
