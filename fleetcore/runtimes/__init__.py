"""Load and run models: the one place that imports a model runtime.

``load_model(path)`` returns a :class:`ModelRuntime` for an ONNX model
(onnxruntime) or a TFLite model (ai-edge-litert, else tflite-runtime); the
runtime packages are imported only when a model of their format is loaded.
``run_smoke_test`` is the check both the control plane's validation gate and
the agent's activation step run on signed smoke vectors.
"""

from __future__ import annotations

from fleetcore.runtimes._base import (
    FORMATS,
    ModelRuntime,
    SmokeResult,
    available_runtimes,
    detect_format,
    installed_formats,
    load_model,
    make_expected_outputs,
    run_smoke_test,
)

__all__ = [
    "FORMATS",
    "ModelRuntime",
    "SmokeResult",
    "available_runtimes",
    "detect_format",
    "installed_formats",
    "load_model",
    "make_expected_outputs",
    "run_smoke_test",
]
