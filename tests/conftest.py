"""Session-wide fixtures: the sensor model, built once per test session.

The ONNX build runs the real pipeline (training, export, quantization) on a
small sample count; the committed TFLite models and weights are used as they
are. Heavy imports happen inside fixtures so that environments without onnx
(e.g. a TFLite-only device image) can still run the TFLite tests.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

#: Training rows for the test build: enough for ~90 % accuracy, fast to train.
TEST_SAMPLES = 4000
TEST_SEED = 7


@dataclass(frozen=True)
class SensorBuild:
    out: Path
    summary: dict[str, Any]
    console_text: str
    heldout: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]

    def model(self, name: str) -> Path:
        files = {
            "float": "sensor-float.onnx",
            "int8-static": "sensor-int8-static.onnx",
            "int8-dynamic": "sensor-int8-dynamic.onnx",
        }
        return self.out / files[name]

    def variant(self, name: str) -> dict[str, Any]:
        return next(v for v in self.summary["variants"] if v["name"] == name)


@pytest.fixture(scope="session")
def sensor_build(tmp_path_factory: pytest.TempPathFactory) -> SensorBuild:
    """The pipeline's artifacts for a small run (needs onnx and onnxruntime)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from rich.console import Console

    from models.sensor import pipeline, recipe

    out = tmp_path_factory.mktemp("sensor")
    buffer = io.StringIO()
    summary = pipeline.run(
        out,
        samples=TEST_SAMPLES,
        seed=TEST_SEED,
        console=Console(file=buffer, width=120, color_system=None),
    )
    return SensorBuild(
        out=out,
        summary=summary,
        console_text=buffer.getvalue(),
        heldout=recipe.heldout(TEST_SAMPLES, TEST_SEED),
    )


@dataclass(frozen=True)
class CommittedModels:
    """The committed TFLite artifacts and the float model they were built from."""

    tflite: Path
    tflite_int8_io: Path
    provenance: dict[str, Any]
    float_model: Any  # models.sensor.train.MLP
    heldout: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]


@pytest.fixture(scope="session")
def committed() -> CommittedModels:
    from models.sensor import recipe, tflite_build
    from models.sensor.train import MLP

    artifacts = tflite_build.ARTIFACTS
    provenance = json.loads((artifacts / tflite_build.PROVENANCE_NAME).read_text())
    recipe_args = provenance["recipe"]
    return CommittedModels(
        tflite=artifacts / tflite_build.TFLITE_NAME,
        tflite_int8_io=artifacts / tflite_build.TFLITE_IO_NAME,
        provenance=provenance,
        float_model=MLP.load(artifacts / tflite_build.WEIGHTS_NAME),
        heldout=recipe.heldout(recipe_args["samples"], recipe_args["seed"]),
    )
