"""A tiny ONNX softmax classifier (4 features, 3 classes) for tests and benchmarks.

Built directly with ``onnx.helper`` from seeded weights, so it is the same model
every time and needs no training: handy wherever a real, loadable, signable
model file is needed but its accuracy does not matter.
"""

from __future__ import annotations

import numpy as np

FEATURES = 4
CLASSES = 3


def tiny_onnx_bytes(seed: int = 0, *, pad_bytes: int = 0) -> bytes:
    """The model; ``pad_bytes`` adds an unused constant so the file has a given bulk."""
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415 - optional dependency

    weights = np.random.default_rng(seed).standard_normal((FEATURES, CLASSES)).astype(np.float32)
    padding = [numpy_helper.from_array(np.zeros(pad_bytes, dtype=np.uint8), "padding")]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "tiny",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", CLASSES])],
        initializer=[numpy_helper.from_array(weights, "W"), *(padding if pad_bytes else [])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    data: bytes = model.SerializeToString()
    return data


__all__ = ["CLASSES", "FEATURES", "tiny_onnx_bytes"]
