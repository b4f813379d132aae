"""Can a device run a release? Its enrolled capabilities against the signed compatibility.

Pure functions: :func:`incompatibilities` lists every reason a device cannot
run a manifest (an empty list means it can), so the director refuses an
assignment with one clear message instead of letting the device fail later.

Rules: the device lists the manifest's format; it has a runtime that loads
that format (``onnxruntime`` for ONNX; ``tflite-runtime`` or
``ai-edge-litert`` for TFLite); and for an ONNX model that names its opset, the
device's onnxruntime accepts that opset (``onnx_opsets`` is an inclusive range).
"""

from __future__ import annotations

from fleetcore.metadata import ReleaseManifest
from fleetcore.protocol import Capabilities

#: Device runtimes able to load each signed runtime tag (``compatibility.runtime``).
RUNTIMES: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("onnxruntime",),
    "tflite": ("tflite-runtime", "ai-edge-litert"),
}


def incompatibilities(capabilities: Capabilities, manifest: ReleaseManifest) -> list[str]:
    reasons = []
    fmt = manifest.format
    if fmt not in capabilities.formats:
        offered = ", ".join(capabilities.formats) or "none"
        reasons.append(f"the device runs no {fmt} models (formats: {offered})")
    runtime = manifest.compatibility.runtime
    usable = RUNTIMES.get(runtime, (runtime,))
    if not any(name in capabilities.runtimes for name in usable):
        have = ", ".join(sorted(capabilities.runtimes)) or "none"
        reasons.append(f"the device has no {' or '.join(usable)} (runtimes: {have})")
    opset = manifest.compatibility.opset
    if fmt == "onnx" and opset is not None:
        accepted = capabilities.onnx_opsets
        if accepted is None:
            reasons.append(f"the model needs ONNX opset {opset}; the device reports no opset range")
        elif not accepted[0] <= opset <= accepted[1]:
            reasons.append(
                f"the model needs ONNX opset {opset}; the device accepts "
                f"{accepted[0]} to {accepted[1]}"
            )
    return reasons


__all__ = ["RUNTIMES", "incompatibilities"]
