"""Export the trained MLP to a float32 ONNX graph built with ``onnx.helper``.

Theory of operation: the graph reproduces :meth:`MLP.predict_proba` exactly:

    features [N, F] -> Sub(mean) -> Div(std) -> (MatMul -> Add -> Relu) x 2
                    -> MatMul -> Add -> Softmax(axis=-1) -> probabilities [N, K]

Standardization lives in the graph, so devices feed raw sensor readings.
Dense layers are ``MatMul`` + ``Add`` rather than ``Gemm`` because
onnxruntime's dynamic quantizer rewrites ``MatMul`` into ``MatMulInteger``.
The model targets opset 17 and IR version 9 so onnxruntime releases back to
1.15 load it, and it is checked with ``onnx.checker`` before it is written.
The weights digest and the seed go into ``metadata_props`` for provenance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.sensor.train import MLP

INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"
OPSET = 17
IR_VERSION = 9


def build_onnx(model: MLP, *, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """Build (and check) the float32 ONNX graph for ``model``."""
    inits = [
        numpy_helper.from_array(model.mean.astype(np.float32), "norm_mean"),
        numpy_helper.from_array(model.std.astype(np.float32), "norm_std"),
    ]
    nodes = [
        helper.make_node("Sub", [INPUT_NAME, "norm_mean"], ["centered"], name="center"),
        helper.make_node("Div", ["centered", "norm_std"], ["h0"], name="scale"),
    ]
    last = len(model.weights) - 1
    for i, (w, b) in enumerate(zip(model.weights, model.biases, strict=True)):
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"dense{i}_w"))
        inits.append(numpy_helper.from_array(b.astype(np.float32), f"dense{i}_b"))
        out = "logits" if i == last else f"h{i + 1}"
        nodes.append(helper.make_node("MatMul", [f"h{i}", f"dense{i}_w"], [f"mm{i}"], f"mm{i}"))
        add_out = out if i == last else f"pre{i + 1}"
        nodes.append(helper.make_node("Add", [f"mm{i}", f"dense{i}_b"], [add_out], f"add{i}"))
        if i != last:
            nodes.append(helper.make_node("Relu", [add_out], [out], name=f"relu{i}"))
    nodes.append(helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], name="softmax", axis=-1))

    graph = helper.make_graph(
        nodes,
        "sensor_mlp",
        inputs=[
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, ["batch", model.n_features]
            )
        ],
        outputs=[
            helper.make_tensor_value_info(
                OUTPUT_NAME, TensorProto.FLOAT, ["batch", model.n_classes]
            )
        ],
        initializer=inits,
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="edgefleet.models.sensor",
        producer_version="1",
        doc_string="Predictive-maintenance classifier: raw sensor features to class probabilities.",
    )
    proto.ir_version = IR_VERSION
    helper.set_model_props(proto, {"weights_sha256": model.digest(), **(metadata or {})})
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(model: MLP, path: Path, *, metadata: dict[str, str] | None = None) -> Path:
    """Write the float32 ONNX model for ``model`` to ``path``."""
    proto = build_onnx(model, metadata=metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))
    return path
