"""Building and signing release manifests for model files.

:func:`build_manifest` measures the artifact (streamed SHA-256 and length),
loads it in its real runtime to record the input/output schema and to compute
the smoke-test vectors' expected outputs, and fills in the signed facts. The
smoke inputs come from the caller (``--smoke-inputs``), else from the drift
reference's bins (values the model will really see), else from a seeded normal
distribution.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fleetcore import canonical
from fleetcore.envelope import Envelope
from fleetcore.errors import MetadataError
from fleetcore.keys import PrivateKey
from fleetcore.metadata import (
    ArtifactInfo,
    Compatibility,
    DigestRef,
    ReleaseManifest,
    SmokeTests,
    SmokeVector,
)
from fleetcore.runtimes import ModelRuntime, detect_format, load_model, make_expected_outputs

RUNTIME_TAG = {"onnx": "onnxruntime", "tflite": "tflite"}


@dataclass(frozen=True)
class ReleaseRequest:
    """Everything an operator chooses about a release; the rest is measured."""

    model_file: Path
    model: str
    release: int
    version: str
    expires_in: timedelta = timedelta(days=365)
    floor: int = 0
    quantization: Mapping[str, Any] = field(default_factory=dict)
    hardware_tags: tuple[str, ...] = ()
    drift_reference: Path | None = None
    smoke_inputs: npt.NDArray[Any] | None = None
    smoke_count: int = 4
    atol: float = 1e-2
    rtol: float = 0.0
    revoked: tuple[str, ...] = ()
    provenance: Mapping[str, Any] = field(default_factory=dict)


def digest_file(path: Path, chunk_bytes: int = 1 << 20) -> DigestRef:
    sha = hashlib.sha256()
    length = 0
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            sha.update(chunk)
            length += len(chunk)
    return DigestRef(sha.hexdigest(), length)


def onnx_opset(path: Path) -> int | None:
    try:
        import onnx  # noqa: PLC0415 - optional, heavy
    except ImportError:
        return None
    model = onnx.load(str(path), load_external_data=False)
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return int(opset.version)
    return None


def _reference_sampler(path: Path, rows: int, seed: int) -> npt.NDArray[np.float32]:
    """Rows drawn bin by bin from the drift reference: realistic feature values."""
    from fleetcore.drift import DriftReference  # noqa: PLC0415 - only when asked for

    reference = DriftReference.from_dict(canonical.decode(path.read_bytes()))
    rng = np.random.default_rng(seed)
    columns = []
    for feature in reference.features:
        edges = np.asarray(feature.edges, dtype=np.float64)
        bins = rng.integers(0, len(edges) - 1, size=rows)
        columns.append(rng.uniform(edges[bins], edges[bins + 1]))
    return np.stack(columns, axis=1).astype(np.float32)


def _smoke_inputs(
    runtime: ModelRuntime, request: ReleaseRequest
) -> list[dict[str, npt.NDArray[Any]]]:
    rows = request.smoke_count
    first = runtime.inputs[0]
    if request.smoke_inputs is not None:
        data = np.asarray(request.smoke_inputs)[:rows]
    elif request.drift_reference is not None and len(runtime.inputs) == 1:
        data = _reference_sampler(request.drift_reference, rows, seed=request.release)
    else:
        rng = np.random.default_rng(request.release)
        feature_shape = tuple(1 if d is None else d for d in first.shape[1:])
        data = rng.standard_normal((rows, *feature_shape))
    if len(runtime.inputs) != 1:
        raise MetadataError("smoke inputs can be generated only for single-input models")
    # One vector per row, batch of one: works for fixed-batch models too.
    return [{first.name: np.asarray(row[None, ...], dtype=first.dtype)} for row in data]


def build_manifest(request: ReleaseRequest, *, issued: datetime) -> ReleaseManifest:
    fmt = detect_format(request.model_file)
    runtime = load_model(request.model_file, fmt)
    inputs = _smoke_inputs(runtime, request)
    expected = make_expected_outputs(runtime, inputs)
    digest = digest_file(request.model_file)
    drift = None if request.drift_reference is None else digest_file(request.drift_reference)
    return ReleaseManifest(
        model=request.model,
        release=request.release,
        version=request.version,
        issued=issued,
        expires=issued + request.expires_in,
        artifact=ArtifactInfo(digest.length, digest.sha256, name=request.model_file.name),
        format=fmt,
        compatibility=Compatibility(
            runtime=RUNTIME_TAG[fmt],
            inputs=runtime.inputs,
            outputs=runtime.outputs,
            opset=onnx_opset(request.model_file) if fmt == "onnx" else None,
            hardware_tags=request.hardware_tags,
        ),
        smoke_tests=SmokeTests(
            tuple(SmokeVector(i, e) for i, e in zip(inputs, expected, strict=True)),
            atol=request.atol,
            rtol=request.rtol,
        ),
        quantization=dict(request.quantization),
        drift_reference=drift,
        floor=request.floor,
        revoked=request.revoked,
        provenance=dict(request.provenance),
    )


def sign_manifest(manifest: ReleaseManifest, keys: Sequence[PrivateKey]) -> Envelope:
    # Parse what we are about to sign, so a manifest we write always verifies.
    envelope = Envelope(ReleaseManifest.from_dict(manifest.to_dict()).to_dict())
    for key in keys:
        envelope.sign(key)
    return envelope


__all__ = [
    "RUNTIME_TAG",
    "ReleaseRequest",
    "build_manifest",
    "digest_file",
    "onnx_opset",
    "sign_manifest",
]
