"""TFLite models through ai-edge-litert or the older tflite-runtime.

Theory of operation: the interpreter class comes from ``ai_edge_litert`` when
it can be imported, else from ``tflite_runtime``; the environment variable
``EDGEFLEET_TFLITE_RUNTIME`` (``ai-edge-litert`` or ``tflite-runtime``) forces
one. Tensor names are the model's signature keys when it has exactly one
signature (converted Keras models name their tensors
``serving_default_x:0``), otherwise the tensor names.

Batch size is free: when a feed's shape differs from the shape the tensors were
last allocated for, the input is resized and tensors are reallocated; the
shape is cached, so a steady batch size pays nothing.

Quantized I/O: an int8 or uint8 input or output with a scale is presented to
callers as float32. Inputs are quantized with ``round(x / scale) + zero_point``
(half away from zero, as TFLite's kernels round) and clipped to the integer
range; outputs are dequantized with ``(q - zero_point) * scale``.

A TFLite interpreter is not thread-safe, so :meth:`TfliteModel.run` holds a
lock for the whole set-invoke-get sequence.

Malformed files: ai-edge-litert verifies the FlatBuffer before using it.
tflite-runtime does not, and a truncated or corrupt file can crash the whole
process (segmentation fault) instead of raising. So with tflite-runtime the
model is first loaded and allocated in a child Python process; only if that
child exits cleanly is it loaded here. tflite-runtime wheels are built against
NumPy 1 and are refused under NumPy 2 without being imported.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fleetcore.errors import RuntimeLoadError
from fleetcore.tensors import DTYPES, TensorSpec

#: Environment variable that forces one TFLite interpreter package.
RUNTIME_ENV = "EDGEFLEET_TFLITE_RUNTIME"
#: Interpreter packages in order of preference: name -> (module, distribution).
_PACKAGES = {
    "ai-edge-litert": ("ai_edge_litert", "ai-edge-litert"),
    "tflite-runtime": ("tflite_runtime", "tflite-runtime"),
}


#: Packages that load FlatBuffers without verifying them (see module docstring).
_UNVERIFIED = frozenset({"tflite-runtime"})
#: Longest a child process may take to load and allocate a model.
PROBE_TIMEOUT_S = 60.0
_PROBE = """
import sys
from tflite_runtime.interpreter import Interpreter
Interpreter(model_path=sys.argv[1], num_threads=1).allocate_tensors()
"""


def _import_package(name: str) -> tuple[Any, str]:
    """Import one interpreter package; return (Interpreter class, version)."""
    module_name, dist = _PACKAGES[name]
    if name == "tflite-runtime" and int(np.__version__.split(".")[0]) >= 2:
        raise ImportError(f"tflite-runtime needs NumPy < 2, this is NumPy {np.__version__}")
    module = importlib.import_module(f"{module_name}.interpreter")
    top = importlib.import_module(module_name)
    version = getattr(top, "__version__", None)
    if not isinstance(version, str):
        version = importlib.metadata.version(dist)
    return module.Interpreter, version


def _choose_interpreter() -> tuple[Any, str, str]:
    forced = os.environ.get(RUNTIME_ENV, "").strip()
    if forced and forced not in _PACKAGES:
        raise RuntimeLoadError(f"{RUNTIME_ENV}={forced!r} is not one of {', '.join(_PACKAGES)}")
    problems = []
    for name in [forced] if forced else list(_PACKAGES):
        try:
            cls, version = _import_package(name)
        except Exception as exc:
            # Not only ImportError: a broken native install fails in other ways.
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        return cls, name, version
    hint = "install edgefleet[tflite] (or edgefleet[tflite-legacy])"
    raise RuntimeLoadError(f"no TFLite interpreter can be imported ({'; '.join(problems)}); {hint}")


def tflite_versions() -> dict[str, str]:
    """Name -> version of each TFLite interpreter package that imports."""
    found = {}
    for name in _PACKAGES:
        try:
            _cls, version = _import_package(name)
        except Exception:  # noqa: S112  (absent or broken: not available)
            continue
        found[name] = version
    return found


@dataclass
class _Port:
    """One model input or output as the interpreter sees it."""

    name: str
    index: int
    dtype: np.dtype[Any]
    scale: float
    zero_point: int
    shape: tuple[int, ...]

    @property
    def quantized(self) -> bool:
        return self.scale > 0.0 and self.dtype in (np.dtype(np.int8), np.dtype(np.uint8))

    def spec(self, signature: tuple[int, ...]) -> TensorSpec:
        dtype = "float32" if self.quantized else self.dtype.name
        if dtype not in DTYPES:
            raise RuntimeLoadError(f"model tensor {self.name!r} has unsupported type {dtype}")
        # Dimension 0 is the batch, which run() resizes to whatever it is given.
        shape = tuple(None if i == 0 or d < 0 else int(d) for i, d in enumerate(signature))
        return TensorSpec(name=self.name, dtype=dtype, shape=shape)

    def to_model(self, values: npt.NDArray[Any]) -> npt.NDArray[Any]:
        if not self.quantized:
            return np.ascontiguousarray(values, dtype=self.dtype)
        scaled = np.asarray(values, dtype=np.float64) / self.scale
        rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5) + self.zero_point
        info = np.iinfo(self.dtype)
        return np.ascontiguousarray(np.clip(rounded, info.min, info.max).astype(self.dtype))

    def from_model(self, values: npt.NDArray[Any]) -> npt.NDArray[Any]:
        if not self.quantized:
            return values
        shifted = values.astype(np.float32) - np.float32(self.zero_point)
        return np.asarray(shifted * np.float32(self.scale), dtype=np.float32)


def _ports(details: list[dict[str, Any]], names: dict[int, str]) -> list[_Port]:
    ports = []
    for d in details:
        params = d.get("quantization_parameters", {})
        scales = np.asarray(params.get("scales", []))
        if scales.size > 1:
            raise RuntimeLoadError(
                f"tensor {d['name']!r} is quantized per channel; model I/O must be per tensor"
            )
        scale, zero_point = d.get("quantization", (0.0, 0))
        ports.append(
            _Port(
                name=names[int(d["index"])],
                index=int(d["index"]),
                dtype=np.dtype(d["dtype"]),
                scale=float(scale),
                zero_point=int(zero_point),
                shape=tuple(int(n) for n in d["shape"]),
            )
        )
    return ports


def _signature_names(
    interpreter: Any, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]
) -> tuple[dict[int, str], dict[int, str]]:
    plain_in = {int(d["index"]): str(d["name"]) for d in inputs}
    plain_out = {int(d["index"]): str(d["name"]) for d in outputs}
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1:
        return plain_in, plain_out
    runner = interpreter.get_signature_runner(next(iter(signatures)))
    sig_in = {int(d["index"]): str(k) for k, d in runner.get_input_details().items()}
    sig_out = {int(d["index"]): str(k) for k, d in runner.get_output_details().items()}
    if set(sig_in) == set(plain_in) and set(sig_out) == set(plain_out):
        return sig_in, sig_out
    return plain_in, plain_out


class TfliteModel:
    """A model loaded into a TFLite interpreter; satisfies :class:`ModelRuntime`."""

    format = "tflite"

    def __init__(self, interpreter: Any, runtime: str, version: str) -> None:
        self._interpreter = interpreter
        self._lock = threading.Lock()
        self.runtime = runtime
        self.runtime_version = version
        in_details = interpreter.get_input_details()
        out_details = interpreter.get_output_details()
        in_names, out_names = _signature_names(interpreter, in_details, out_details)
        self._in = _ports(in_details, in_names)
        self._out = _ports(out_details, out_names)
        self.inputs = tuple(
            p.spec(tuple(d.get("shape_signature", d["shape"])))
            for p, d in zip(self._in, in_details, strict=True)
        )
        self.outputs = tuple(
            p.spec(tuple(d.get("shape_signature", d["shape"])))
            for p, d in zip(self._out, out_details, strict=True)
        )

    def __repr__(self) -> str:
        return f"TfliteModel(inputs={[p.name for p in self._in]}, runtime={self.runtime})"

    def run(self, feeds: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Run one batch of any size; raises RuntimeLoadError on failure."""
        names = {p.name for p in self._in}
        if set(feeds) != names:
            raise RuntimeLoadError(
                f"feeds {sorted(feeds)} do not match the model inputs {sorted(names)}"
            )
        # Checked here, not left to the interpreter: tflite-runtime crashes the
        # process when tensors are allocated for an incompatible input shape.
        for spec in self.inputs:
            shape = np.shape(feeds[spec.name])
            if len(shape) != len(spec.shape) or any(
                want is not None and got != want
                for got, want in zip(shape, spec.shape, strict=True)
            ):
                expected = ["N" if d is None else d for d in spec.shape]
                raise RuntimeLoadError(
                    f"input {spec.name!r} has shape {list(shape)}, the model takes {expected}"
                )
        with self._lock:
            try:
                return self._run_locked(feeds)
            except RuntimeLoadError:
                raise
            except Exception as exc:
                # Shapes may be half-updated; force a resize on the next call.
                for port in self._in:
                    port.shape = ()
                raise RuntimeLoadError(
                    f"TFLite interpreter failed to run the model: {exc}"
                ) from exc

    def run_validated(self, feeds: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Same as :meth:`run`: the shape check stays, since a bad shape can crash
        the interpreter, and it is cheap next to an invocation."""
        return self.run(feeds)

    def _run_locked(self, feeds: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        interp = self._interpreter
        prepared = [(port, port.to_model(feeds[port.name])) for port in self._in]
        resized = False
        for port, array in prepared:
            if array.shape != port.shape:
                interp.resize_tensor_input(port.index, list(array.shape), strict=False)
                port.shape = array.shape
                resized = True
        if resized:
            interp.allocate_tensors()
        for port, array in prepared:
            interp.set_tensor(port.index, array)
        interp.invoke()
        return {port.name: port.from_model(interp.get_tensor(port.index)) for port in self._out}


def _probe_in_child(path: Path) -> None:
    """Load ``path`` with tflite-runtime in a child process; raise if that fails or crashes."""
    if not sys.executable:
        raise RuntimeLoadError("cannot check the model: no Python executable to run a child")
    try:
        result = subprocess.run(  # noqa: S603  (fixed code, our own interpreter)
            [sys.executable, "-c", _PROBE, str(path)],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeLoadError(f"tflite-runtime could not check {path}: {exc}") from exc
    if result.returncode < 0:
        raise RuntimeLoadError(
            f"tflite-runtime cannot load {path}: the interpreter crashed "
            f"(signal {-result.returncode}); the file is malformed"
        )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise RuntimeLoadError(f"tflite-runtime cannot load {path}: {lines[-1] if lines else ''}")


def load_tflite(path: Path, *, threads: int = 1) -> TfliteModel:
    """Load a TFLite model file into the preferred (or forced) interpreter."""
    cls, name, version = _choose_interpreter()
    if name in _UNVERIFIED:
        _probe_in_child(path)
    try:
        interpreter = cls(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
        return TfliteModel(interpreter, name, version)
    except RuntimeLoadError:
        raise
    except Exception as exc:
        raise RuntimeLoadError(f"{name} cannot load {path}: {exc}") from exc


__all__ = ["RUNTIME_ENV", "TfliteModel", "load_tflite", "tflite_versions"]
