"""Shared pieces of the drift, telemetry and capture tests: a reference, a probe, a queue."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent._channel_outbox import ChannelLimit, ChannelOutbox
from agent.serving import ModelInfo
from agent.statedb import StateDB
from fleetcore.drift import DriftReference, build_reference
from fleetcore.tensors import TensorSpec
from models.tiny import CLASSES, FEATURES

CLASS_NAMES = ("low", "mid", "high")


def reference(seed: int = 0, rows: int = 2000) -> DriftReference:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, FEATURES))
    logits = rng.standard_normal((rows, CLASSES))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = p.argmax(axis=1)
    return build_reference(
        x, p, labels, feature_names=[f"f{i}" for i in range(FEATURES)], class_names=CLASS_NAMES
    )


def model_info(release: int = 1, model: str = "tiny") -> ModelInfo:
    return ModelInfo(
        model=model,
        release=release,
        sha256=f"{release:064x}",
        format="onnx",
        inputs=(TensorSpec("features", "float32", (None, FEATURES)),),
        outputs=(TensorSpec("probabilities", "float32", (None, CLASSES)),),
    )


def channels(tmp_path: Path, **limits: ChannelLimit) -> ChannelOutbox:
    default = ChannelLimit(1000, 10_000_000)
    names = {"drift": default, "telemetry": default, "capture": default, **limits}
    return ChannelOutbox(StateDB.open(tmp_path), names)


def batch(rows: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, FEATURES)).astype(np.float32)
    logits = rng.standard_normal((rows, CLASSES))
    p = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    return x, p
