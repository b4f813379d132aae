"""Release manifests: what the release role vouches for in one model version.

A manifest binds a model name and a release counter (strictly increasing per
model) to the artifact's length and SHA-256, its format, quantization and
compatibility, the smoke-test vectors a device must reproduce before
activation, the drift reference digest, and an expiry. It also carries the
model's release floor and revoked hashes, which only ever tighten on a device.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from fleetcore.errors import MetadataError
from fleetcore.metadata._fields import (
    NAME,
    SHA256_HEX,
    SPEC_VERSION,
    ArtifactInfo,
    Fields,
    format_time,
)
from fleetcore.tensors import TensorSpec, decode_tensor, encode_tensor

FORMATS = ("onnx", "tflite")
_TAG = re.compile(r"[a-z0-9][a-z0-9._:-]{0,63}")
Tensors = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True)
class Compatibility:
    """Where a model can run: runtime, opset, hardware tags and I/O schema."""

    runtime: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int | None = None
    hardware_tags: tuple[str, ...] = ()
    unrecognized: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, obj: Any) -> Compatibility:
        f = Fields(obj, "compatibility")
        runtime = f.string("runtime", pattern=_TAG)
        inputs = tuple(TensorSpec.from_dict(i) for i in f.array("inputs", max_items=64))
        outputs = tuple(TensorSpec.from_dict(o) for o in f.array("outputs", max_items=64))
        if not inputs or not outputs:
            raise MetadataError("compatibility needs at least one input and one output")
        opset = f.optional_integer("opset", minimum=1)
        tags = f.string_list("hardware_tags", pattern=_TAG, optional=True)
        return cls(runtime, inputs, outputs, opset, tags, f.rest())

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.unrecognized,
            "runtime": self.runtime,
            "inputs": [spec.to_dict() for spec in self.inputs],
            "outputs": [spec.to_dict() for spec in self.outputs],
            "opset": self.opset,
            "hardware_tags": list(self.hardware_tags),
        }


@dataclass(frozen=True)
class SmokeVector:
    inputs: Tensors
    expected: Tensors


def _tensors(obj: Any, what: str) -> Tensors:
    if not isinstance(obj, dict) or not obj:
        raise MetadataError(f"smoke vector {what} must be a non-empty object of tensors")
    return {str(name): decode_tensor(value) for name, value in obj.items()}


@dataclass(frozen=True)
class SmokeTests:
    """Inputs with expected outputs; a device must match within the tolerance."""

    vectors: tuple[SmokeVector, ...]
    atol: float
    rtol: float
    unrecognized: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, obj: Any) -> SmokeTests:
        f = Fields(obj, "smoke_tests")
        atol, rtol = f.number("atol"), f.number("rtol")
        vectors = []
        for item in f.array("vectors", max_items=256):
            v = Fields(item, "smoke vector")
            vectors.append(
                SmokeVector(
                    _tensors(v.required_object("inputs"), "inputs"),
                    _tensors(v.required_object("expected"), "expected"),
                )
            )
        if not vectors:
            raise MetadataError("smoke_tests needs at least one vector")
        return cls(tuple(vectors), atol, rtol, f.rest())

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.unrecognized,
            "atol": self.atol,
            "rtol": self.rtol,
            "vectors": [
                {
                    "inputs": {k: encode_tensor(np.asarray(a)) for k, a in v.inputs.items()},
                    "expected": {k: encode_tensor(np.asarray(a)) for k, a in v.expected.items()},
                }
                for v in self.vectors
            ],
        }


@dataclass(frozen=True)
class DigestRef:
    """Length and SHA-256 of a side file, such as the drift reference."""

    sha256: str
    length: int

    @classmethod
    def from_dict(cls, obj: Any, what: str) -> DigestRef:
        f = Fields(obj, what)
        return cls(sha256=f.string("sha256", pattern=SHA256_HEX), length=f.integer("length"))

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "length": self.length}


@dataclass(frozen=True)
class ReleaseManifest:
    model: str
    release: int
    version: str
    issued: datetime
    expires: datetime
    artifact: ArtifactInfo
    format: str
    compatibility: Compatibility
    smoke_tests: SmokeTests
    quantization: dict[str, Any] = field(default_factory=dict)
    drift_reference: DigestRef | None = None
    floor: int = 0
    revoked: tuple[str, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)
    unrecognized: dict[str, Any] = field(default_factory=dict, compare=False)

    type = "release"

    def __post_init__(self) -> None:
        if self.floor > self.release:
            raise MetadataError(
                f"release {self.release} of {self.model} sets floor {self.floor} above itself"
            )
        if self.format not in FORMATS:
            raise MetadataError(f"model format {self.format!r} is not one of {', '.join(FORMATS)}")

    @classmethod
    def from_dict(cls, obj: Any) -> ReleaseManifest:
        f = Fields(obj, "release manifest")
        f.expect("_type", cls.type)
        f.spec_version()
        drift = f.object("drift_reference", optional=True)
        return cls(
            model=f.string("model", pattern=NAME),
            release=f.integer("release", minimum=1),
            version=f.string("version", pattern=NAME),
            issued=f.time("issued"),
            expires=f.time("expires"),
            artifact=ArtifactInfo.from_dict(f.required_object("artifact")),
            format=f.string("format"),
            compatibility=Compatibility.from_dict(f.required_object("compatibility")),
            smoke_tests=SmokeTests.from_dict(f.required_object("smoke_tests")),
            quantization=f.object("quantization", optional=True) or {},
            drift_reference=None
            if drift is None
            else DigestRef.from_dict(drift, "drift_reference"),
            floor=f.integer("floor"),
            revoked=f.string_list("revoked", pattern=SHA256_HEX, optional=True),
            provenance=f.object("provenance", optional=True) or {},
            unrecognized=f.rest(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.unrecognized,
            "_type": self.type,
            "spec_version": SPEC_VERSION,
            "model": self.model,
            "release": self.release,
            "version": self.version,
            "issued": format_time(self.issued),
            "expires": format_time(self.expires),
            "artifact": self.artifact.to_dict(),
            "format": self.format,
            "compatibility": self.compatibility.to_dict(),
            "smoke_tests": self.smoke_tests.to_dict(),
            "quantization": self.quantization,
            "drift_reference": None
            if self.drift_reference is None
            else self.drift_reference.to_dict(),
            "floor": self.floor,
            "revoked": list(self.revoked),
            "provenance": self.provenance,
        }


__all__ = [
    "FORMATS",
    "Compatibility",
    "DigestRef",
    "ReleaseManifest",
    "SmokeTests",
    "SmokeVector",
]
