"""The model registry's building blocks: datasets, quantization and the validation gate.

:mod:`.datasets` reads and writes the ``.npz`` datasets operators upload
(calibration, evaluation, drift reference), refusing anything hostile or
malformed. :mod:`.quantize` turns a float ONNX model into an int8 one.
:mod:`.validation` is the gate every model version passes before it can be
signed: it runs the model in its real runtime and returns a
:class:`ValidationReport` whose ``reasons`` say why a version stays draft.
"""

from control_plane.registry.datasets import (
    DEFAULT_MAX_ELEMENTS,
    DEFAULT_MAX_ROWS,
    Dataset,
    load_dataset,
    save_dataset,
)
from control_plane.registry.quantize import QuantizationRecipe, quantize_onnx
from control_plane.registry.validation import (
    ValidationReport,
    smoke_tests_from_dict,
    validate_model,
)

__all__ = [
    "DEFAULT_MAX_ELEMENTS",
    "DEFAULT_MAX_ROWS",
    "Dataset",
    "QuantizationRecipe",
    "ValidationReport",
    "load_dataset",
    "quantize_onnx",
    "save_dataset",
    "smoke_tests_from_dict",
    "validate_model",
]
