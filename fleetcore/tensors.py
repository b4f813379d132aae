"""Exact, compact tensors inside signed JSON.

A tensor is ``{"dtype": "float32", "shape": [2, 20], "data": "<base64>"}``
where ``data`` is the array's little-endian bytes in C order. Base64 keeps the
values bit-exact (no float formatting in signed bytes) and smaller than JSON
number lists. Smoke-test vectors and their expected outputs use this form.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fleetcore.errors import MetadataError

#: dtypes a model input or output may have; names as numpy spells them.
DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(name).newbyteorder("<")
    for name in ("float16", "float32", "float64", "int8", "uint8", "int16", "int32", "int64")
}
#: Largest tensor accepted inside metadata, in elements.
MAX_TENSOR_ELEMENTS = 1 << 20


def encode_tensor(array: npt.ArrayLike) -> dict[str, Any]:
    """Encode an array as a JSON-safe tensor object."""
    arr = np.asarray(array)
    name = arr.dtype.name
    if name not in DTYPES:
        raise MetadataError(f"tensor dtype {name} is not supported")
    little = np.ascontiguousarray(arr, dtype=DTYPES[name])
    return {
        "dtype": name,
        "shape": [int(n) for n in arr.shape],
        "data": base64.b64encode(little.tobytes()).decode("ascii"),
    }


def decode_tensor(obj: Any) -> npt.NDArray[Any]:
    """Decode a tensor object, checking dtype, shape and byte count agree.

    Raises:
        MetadataError: any field is missing, of the wrong type or inconsistent.
    """
    if not isinstance(obj, dict):
        raise MetadataError("tensor must be a JSON object")
    dtype_name = obj.get("dtype")
    shape = obj.get("shape")
    data = obj.get("data")
    if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
        raise MetadataError(f"tensor dtype {dtype_name!r} is not supported")
    if not isinstance(shape, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise MetadataError("tensor shape must be a list of non-negative integers")
    if len(shape) > 8:
        raise MetadataError("tensor has more than 8 dimensions")
    count = 1
    for n in shape:
        count *= n
        if count > MAX_TENSOR_ELEMENTS:
            raise MetadataError(f"tensor has more than {MAX_TENSOR_ELEMENTS} elements")
    if not isinstance(data, str):
        raise MetadataError("tensor data must be a base64 string")
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise MetadataError("tensor data is not valid base64") from exc
    dtype = DTYPES[dtype_name]
    if len(raw) != count * dtype.itemsize:
        raise MetadataError(
            f"tensor data has {len(raw)} bytes, shape {shape} of {dtype_name} needs "
            f"{count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of a model input or output; ``None`` is a free dimension."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, obj: Any) -> TensorSpec:
        if not isinstance(obj, dict):
            raise MetadataError("tensor spec must be a JSON object")
        name, dtype, shape = obj.get("name"), obj.get("dtype"), obj.get("shape")
        if not isinstance(name, str) or not name:
            raise MetadataError("tensor spec needs a non-empty name")
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise MetadataError(f"tensor spec {name!r} has unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or not all(
            n is None or (isinstance(n, int) and not isinstance(n, bool) and n >= 0) for n in shape
        ):
            raise MetadataError(f"tensor spec {name!r} shape must list integers or null")
        return cls(name=name, dtype=dtype, shape=tuple(shape))


__all__ = ["DTYPES", "MAX_TENSOR_ELEMENTS", "TensorSpec", "decode_tensor", "encode_tensor"]
