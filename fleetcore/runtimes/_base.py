"""The runtime seam: one protocol, format detection, loading and smoke tests.

Theory of operation: :func:`load_model` picks an adapter by file format
(:func:`detect_format` looks for the TFLite FlatBuffer identifier ``TFL3`` at
bytes 4..8; anything else is treated as ONNX) and returns an object satisfying
:class:`ModelRuntime`. The adapters import their runtime lazily, inside
functions, so importing fleetcore never pulls onnxruntime or a TFLite
interpreter, and a device needs only the one it uses.

Every failure at this boundary (runtime not installed, model rejected, a run
that raises) becomes :class:`~fleetcore.errors.RuntimeLoadError` with the
original exception chained.

Smoke tests compare a runtime's outputs on signed input vectors with signed
expected outputs, elementwise with ``|actual - expected| <= atol + rtol *
|expected|`` (numpy's ``allclose`` rule). The control plane's validation gate
and the agent's activation step run the same :func:`run_smoke_test`.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from fleetcore.errors import RuntimeLoadError
from fleetcore.runtimes.onnx import load_onnx, onnxruntime_version
from fleetcore.runtimes.tflite import load_tflite, tflite_versions
from fleetcore.tensors import TensorSpec

#: Model formats :func:`load_model` understands.
FORMATS = ("onnx", "tflite")
#: FlatBuffer file identifier of TFLite models, at byte offset 4.
TFLITE_IDENTIFIER = b"TFL3"


@runtime_checkable
class ModelRuntime(Protocol):
    """A loaded model that maps named input arrays to named output arrays."""

    @property
    def format(self) -> str:
        """``"onnx"`` or ``"tflite"``."""
        ...

    @property
    def runtime(self) -> str:
        """Runtime package: ``onnxruntime``, ``ai-edge-litert`` or ``tflite-runtime``."""
        ...

    @property
    def runtime_version(self) -> str: ...

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """What :meth:`run` expects, as the caller passes it (float32 for quantized I/O)."""
        ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]: ...

    def run(self, feeds: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Run one batch; raises RuntimeLoadError if the runtime fails."""
        ...

    def run_validated(self, feeds: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Run feeds already checked against :attr:`inputs`: exact names and dtypes."""
        ...


@dataclass(frozen=True)
class SmokeResult:
    """Outcome of a smoke test.

    ``max_abs_error`` is the largest elementwise difference seen over all
    compared outputs; it is ``inf`` when a comparison was impossible (a run
    failed, an output was missing, shapes differed, or a value was not finite).
    """

    passed: bool
    max_abs_error: float
    detail: str


def detect_format(path: Path) -> str:
    """Return ``"tflite"`` or ``"onnx"`` from the file's first bytes."""
    try:
        with Path(path).open("rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise RuntimeLoadError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    return "tflite" if head[4:8] == TFLITE_IDENTIFIER else "onnx"


def load_model(path: Path, fmt: str | None = None, *, threads: int = 1) -> ModelRuntime:
    """Load the model at ``path`` with the runtime for its format.

    Args:
        path: model file.
        fmt: ``"onnx"`` or ``"tflite"``; detected from the file when ``None``.
        threads: intra-op threads the runtime may use (devices are small).

    Raises:
        RuntimeLoadError: unknown format, runtime not installed, or the
            runtime rejected the file.
    """
    if threads < 1:
        raise ValueError("threads must be at least 1")
    path = Path(path)
    fmt = detect_format(path) if fmt is None else fmt
    if fmt == "onnx":
        return load_onnx(path, threads=threads)
    if fmt == "tflite":
        return load_tflite(path, threads=threads)
    raise RuntimeLoadError(f"unknown model format {fmt!r}; expected one of {', '.join(FORMATS)}")


#: Import name of each runtime package -> the model format it runs.
_FORMAT_OF_PACKAGE = {"onnxruntime": "onnx", "ai_edge_litert": "tflite", "tflite_runtime": "tflite"}


def installed_formats() -> set[str]:
    """Model formats an installed runtime package can run, found without importing it.

    Importing a runtime costs tens of MiB of memory; a long-running process
    (the agent) asks this and imports only the runtime its model needs. A
    package that is present but broken is found here and fails, with a clear
    :class:`RuntimeLoadError`, when a model is loaded.
    """
    return {fmt for package, fmt in _FORMAT_OF_PACKAGE.items() if importlib.util.find_spec(package)}


def available_runtimes() -> dict[str, str]:
    """Name -> version of every model runtime that can be imported here."""
    found = tflite_versions()
    ort = onnxruntime_version()
    if ort is not None:
        found["onnxruntime"] = ort
    return dict(sorted(found.items()))


def make_expected_outputs(
    runtime: ModelRuntime, inputs: Sequence[Mapping[str, npt.NDArray[Any]]]
) -> list[dict[str, npt.NDArray[Any]]]:
    """Run every input vector and return the outputs, for use as expected values."""
    return [{k: np.array(v, copy=True) for k, v in runtime.run(feeds).items()} for feeds in inputs]


def run_smoke_test(
    runtime: ModelRuntime,
    inputs: Sequence[Mapping[str, npt.NDArray[Any]]],
    expected: Sequence[Mapping[str, npt.NDArray[Any]]],
    *,
    atol: float,
    rtol: float,
) -> SmokeResult:
    """Check ``runtime`` reproduces ``expected`` on ``inputs`` within tolerance.

    Never raises for a failing model: a run error, a missing output, a shape
    difference or a value out of tolerance all yield ``passed=False`` with the
    first problem in ``detail``. Zero vectors is a failure too, so a manifest
    cannot pass the gate by carrying none.
    """
    if not (math.isfinite(atol) and math.isfinite(rtol) and atol >= 0 and rtol >= 0):
        raise ValueError("atol and rtol must be finite and non-negative")
    if not inputs:
        return SmokeResult(False, math.inf, "no smoke vectors to run")
    if len(inputs) != len(expected):
        return SmokeResult(
            False, math.inf, f"{len(inputs)} input vectors but {len(expected)} expected outputs"
        )
    worst = 0.0
    for i, (feeds, want) in enumerate(zip(inputs, expected, strict=True)):
        try:
            got = runtime.run(feeds)
        except RuntimeLoadError as exc:
            return SmokeResult(False, math.inf, f"vector {i}: {exc}")
        for name, exp in want.items():
            failure, err = _compare(got.get(name), np.asarray(exp), atol=atol, rtol=rtol)
            worst = max(worst, err)
            if failure:
                return SmokeResult(False, worst, f"vector {i}, output {name!r}: {failure}")
    count = len(inputs)
    return SmokeResult(
        True, worst, f"{count} vector{'s' if count != 1 else ''} within atol={atol}, rtol={rtol}"
    )


def _compare(
    actual: npt.NDArray[Any] | None, expected: npt.NDArray[Any], *, atol: float, rtol: float
) -> tuple[str | None, float]:
    if actual is None:
        return "missing from the model's outputs", math.inf
    if actual.shape != expected.shape:
        return f"shape {list(actual.shape)} differs from expected {list(expected.shape)}", math.inf
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(e))):
        return "non-finite values", math.inf
    if a.size == 0:
        return None, 0.0
    diff = np.abs(a - e)
    err = float(diff.max())
    bad = diff > atol + rtol * np.abs(e)
    if np.any(bad):
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        return (
            f"{int(bad.sum())} of {a.size} values out of tolerance; first at {list(where)}: "
            f"{a[where]:.6g} vs {e[where]:.6g}",
            err,
        )
    return None, err


__all__ = [
    "FORMATS",
    "ModelRuntime",
    "SmokeResult",
    "available_runtimes",
    "detect_format",
    "load_model",
    "make_expected_outputs",
    "run_smoke_test",
]
