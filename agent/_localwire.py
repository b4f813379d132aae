"""Bodies of the local inference API: JSON and ``.npy`` to and from arrays.

Theory of operation: the server (:mod:`agent.localapi`) turns request bodies
into feeds with the pinned model's input specs, and the client
(:mod:`agent.local`) turns answers back into arrays with the same functions,
so both ends agree on one encoding.

* JSON inputs are nested lists of numbers. Integer inputs take only integers
  within the dtype's range; float inputs take integers or floats. Anything
  else (strings, booleans, nulls, ragged lists) is an :class:`InputError`.
* JSON outputs are nested lists; NaN and infinities, which JSON cannot carry,
  are sent as ``null`` and read back as NaN.
* ``.npy`` bodies are parsed header first: the data must be exactly the bytes
  the header declares, plain numeric dtypes only, so a hostile header can
  neither unpickle anything nor make the reader allocate more than it got.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.serving_errors import InputError
from fleetcore.tensors import TensorSpec

Array = npt.NDArray[Any]
NPY = "application/x-npy"


def json_array(name: str, value: Any, dtype: np.dtype[Any]) -> Array:
    """A JSON (nested) list of numbers as an array of ``dtype``; InputError otherwise."""
    if not isinstance(value, list):
        raise InputError(f"input {name!r} must be a (nested) list of numbers")
    try:
        raw = np.array(value)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise InputError(f"input {name!r} is not a rectangular array of numbers") from exc
    integer = dtype.kind in "iu"
    if raw.dtype.kind not in ("iu" if integer else "iuf"):
        what = "integers" if integer else "numbers"
        raise InputError(f"input {name!r} must hold {what} for dtype {dtype} ({raw.dtype} given)")
    if integer and raw.size:
        limits = np.iinfo(dtype)
        if raw.min() < limits.min or raw.max() > limits.max:
            raise InputError(f"input {name!r} has values outside the range of {dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        return raw.astype(dtype)


def feeds_from_json(body: bytes, specs: Sequence[TensorSpec]) -> dict[str, Array]:
    """``{"inputs": {name: list}}`` (or a bare list for one input) as feeds for ``specs``."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InputError("the body is not valid JSON") from exc
    if not isinstance(doc, dict) or "inputs" not in doc:
        raise InputError('the body must be a JSON object with "inputs"')
    inputs = doc["inputs"]
    if isinstance(inputs, list):
        if len(specs) != 1:
            raise InputError("a bare list of inputs works only for single-input models")
        inputs = {specs[0].name: inputs}
    if not isinstance(inputs, dict):
        raise InputError('"inputs" must map input names to arrays')
    dtypes = {spec.name: np.dtype(spec.dtype) for spec in specs}
    unknown = sorted(set(inputs) - set(dtypes))
    if unknown:
        raise InputError(f"unknown inputs {unknown}; the model takes {sorted(dtypes)}")
    return {name: json_array(name, value, dtypes[name]) for name, value in inputs.items()}


def npy_array(body: bytes) -> Array:
    """Parse a ``.npy`` body (read-only view of ``body``); InputError if it is not one."""
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise InputError(f"unsupported .npy version {version}")
    except InputError:
        raise
    except Exception as exc:  # numpy raises ValueError, SyntaxError, EOFError, ...
        raise InputError(f"the body is not a .npy array: {exc}") from exc
    if dtype.hasobject or dtype.itemsize == 0:
        raise InputError(f".npy dtype {dtype} is not a plain numeric type")
    count, offset = math.prod(shape), stream.tell()
    if len(body) - offset != count * dtype.itemsize:
        raise InputError(
            f".npy header declares {count * dtype.itemsize} data bytes, "
            f"the body has {len(body) - offset}"
        )
    flat = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape, order="F" if fortran else "C")


def npy_bytes(array: npt.ArrayLike) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, np.asarray(array), allow_pickle=False)
    return out.getvalue()


def outputs_to_json(outputs: Mapping[str, Array]) -> dict[str, Any]:
    """Outputs as JSON lists; NaN and infinities become null."""
    result: dict[str, Any] = {}
    for name, array in outputs.items():
        finite = array.dtype.kind != "f" or bool(np.isfinite(array).all())
        result[name] = array.tolist() if finite else _nulls(array.tolist())
    return result


def outputs_from_json(outputs: Mapping[str, Any], specs: Sequence[TensorSpec]) -> dict[str, Array]:
    """Inverse of :func:`outputs_to_json`, with dtypes from ``specs`` (float64 if unknown)."""
    dtypes = {spec.name: np.dtype(spec.dtype) for spec in specs}
    return {
        name: np.array(value, dtype=dtypes.get(name, np.dtype(np.float64)))
        for name, value in outputs.items()
    }


def _nulls(value: Any) -> Any:
    if isinstance(value, list):
        return [_nulls(v) for v in value]
    return value if math.isfinite(value) else None


__all__ = [
    "NPY",
    "feeds_from_json",
    "json_array",
    "npy_array",
    "npy_bytes",
    "outputs_from_json",
    "outputs_to_json",
]
