"""The stateless checks behind update states: hash a file, smoke-test a model.

Theory of operation. These functions read files and run models but hold no
state and write nothing, so the updater can redo them after any crash. Both
raise fleetcore errors whose ``check`` becomes the report's ``reason``:
``length``/``hash`` for bytes that differ from the signed facts,
``runtime``/``smoke`` for a model that does not load or does not reproduce
its signed smoke vectors in the device's real runtime.
"""

from __future__ import annotations

from pathlib import Path

from agent._faults import shifted, smoke_fault
from fleetcore.artifact import verify_stream
from fleetcore.errors import RuntimeLoadError, SmokeTestError
from fleetcore.metadata import ReleaseManifest
from fleetcore.runtimes import installed_formats, load_model, run_smoke_test

#: Runtime packages able to run each model format.
FORMAT_RUNTIMES = {"onnx": ("onnxruntime",), "tflite": ("ai-edge-litert", "tflite-runtime")}


def hash_file(path: Path, length: int, sha256: str) -> None:
    """Raise LengthMismatchError/HashMismatchError unless ``path`` is the signed bytes."""
    with path.open("rb") as handle:
        verify_stream(handle, length, sha256)


def supported_formats() -> set[str]:
    """Model formats some installed runtime can load (found without importing them)."""
    return installed_formats()


def check_runnable(manifest: ReleaseManifest, formats: set[str]) -> None:
    if manifest.format not in formats:
        raise RuntimeLoadError(
            f"no runtime for {manifest.format} models is installed on this device"
        )


def smoke_test(manifest: ReleaseManifest, path: Path, *, threads: int = 1) -> str:
    """Run the signed smoke vectors in the real runtime; return the summary line."""
    runtime = load_model(path, manifest.format, threads=threads)
    tests = manifest.smoke_tests
    expected = [vector.expected for vector in tests.vectors]
    if smoke_fault():  # test-only: see agent._faults
        expected = [shifted(e) for e in expected]
    result = run_smoke_test(
        runtime,
        [vector.inputs for vector in tests.vectors],
        expected,
        atol=tests.atol,
        rtol=tests.rtol,
    )
    if not result.passed:
        raise SmokeTestError(f"smoke test failed: {result.detail}")
    return result.detail


__all__ = ["FORMAT_RUNTIMES", "check_runnable", "hash_file", "smoke_test", "supported_formats"]
