"""A small numpy MLP classifier for the sensor model, trained with Adam.

Theory of operation: the network is ``standardize -> Dense+ReLU -> Dense+ReLU
-> Dense -> softmax`` (20 -> 64 -> 32 -> 4 by default). The standardization
mean and std are part of the model, so exported graphs take raw sensor values.
Training minimizes cross-entropy with Adam on shuffled mini-batches, a cosine
learning-rate decay and a little L2 weight decay.

Determinism: all randomness comes from one ``numpy.random.Generator`` seeded by
``TrainConfig.seed``; the arithmetic runs in float64 and the finished weights
are rounded to float32. Same data and config on the same numpy build give the
same weights bit for bit, which :meth:`MLP.digest` makes checkable (the
committed TFLite model records the digest of the weights it was built from).
"""

from __future__ import annotations

import hashlib
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class MLP:
    """Trained network: standardization plus dense layers (float32)."""

    mean: F32
    std: F32
    weights: tuple[F32, ...]
    biases: tuple[F32, ...]

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.biases) or not self.weights:
            raise ValueError("need one bias per weight matrix and at least one layer")
        width = self.mean.shape[0]
        if self.std.shape != (width,):
            raise ValueError("mean and std must have one value per feature")
        for w, b in zip(self.weights, self.biases, strict=True):
            if w.ndim != 2 or w.shape[0] != width or b.shape != (w.shape[1],):
                raise ValueError(f"layer shapes do not chain: {w.shape} then {b.shape}")
            width = w.shape[1]

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.biases[-1].shape[0])

    def predict_proba(self, X: npt.ArrayLike) -> F32:
        """Class probabilities float32 [n, K], computed as the ONNX graph does."""
        h = (np.asarray(X, dtype=np.float32) - self.mean) / self.std
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            h = np.maximum(h @ w + b, np.float32(0.0))
        logits = h @ self.weights[-1] + self.biases[-1]
        return _softmax(logits).astype(np.float32)

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[np.int64]:
        return np.asarray(np.argmax(self.predict_proba(X), axis=1), dtype=np.int64)

    def arrays(self) -> dict[str, F32]:
        """Named arrays, as stored in the ``.npz`` file."""
        named = {"mean": self.mean, "std": self.std}
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            named[f"w{i}"] = w
            named[f"b{i}"] = b
        return named

    def digest(self) -> str:
        """sha256 over names, shapes and little-endian bytes (not the zip container)."""
        h = hashlib.sha256()
        for name, arr in sorted(self.arrays().items()):
            h.update(f"{name}:{arr.dtype.str}:{list(arr.shape)}\n".encode())
            h.update(np.ascontiguousarray(arr, dtype="<f4").tobytes())
        return h.hexdigest()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            np.savez(fh, **self.arrays())  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> MLP:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: np.asarray(npz[name], dtype=np.float32) for name in npz.files}
        layers = sum(1 for name in arrays if name.startswith("w"))
        try:
            return cls(
                mean=arrays["mean"],
                std=arrays["std"],
                weights=tuple(arrays[f"w{i}"] for i in range(layers)),
                biases=tuple(arrays[f"b{i}"] for i in range(layers)),
            )
        except KeyError as exc:
            raise ValueError(f"{path} is missing array {exc}") from exc


@dataclass(frozen=True)
class TrainConfig:
    hidden: tuple[int, ...] = (64, 32)
    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0


@dataclass(frozen=True)
class TrainReport:
    epochs: int
    final_loss: float
    train_accuracy: float
    seconds: float
    loss_history: tuple[float, ...] = field(repr=False)


def _softmax(logits: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    out: npt.NDArray[np.floating] = e / e.sum(axis=1, keepdims=True)
    return out


def train(
    X: npt.ArrayLike, y: npt.ArrayLike, *, n_classes: int, config: TrainConfig = TrainConfig()
) -> tuple[MLP, TrainReport]:
    """Fit an MLP to features ``X`` [n, F] and integer labels ``y`` [n]."""
    started = time.perf_counter()
    X64 = np.asarray(X, dtype=np.float64)
    labels = np.asarray(y, dtype=np.int64)
    if X64.ndim != 2 or labels.shape != (X64.shape[0],) or X64.shape[0] == 0:
        raise ValueError("X must be [n, F] and y [n] with n > 0")
    rng = np.random.default_rng(config.seed)
    mean = X64.mean(axis=0)
    std = np.maximum(X64.std(axis=0), 1e-6)
    Z = (X64 - mean) / std
    onehot = np.eye(n_classes)[labels]

    sizes = (X64.shape[1], *config.hidden, n_classes)
    # He initialization suits ReLU layers.
    params: list[F64] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        params.append(rng.normal(0.0, np.sqrt(2.0 / fan_in), (fan_in, fan_out)))
        params.append(np.zeros(fan_out))
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8

    n = Z.shape[0]
    steps_per_epoch = -(-n // config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    step = 0
    history: list[float] = []
    for _epoch in range(config.epochs):
        order = rng.permutation(n)
        epoch_loss = 0.0
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            loss, grads = _loss_and_grads(params, Z[idx], onehot[idx])
            epoch_loss += loss * len(idx)
            step += 1
            lr = config.learning_rate * 0.5 * (1.0 + np.cos(np.pi * step / total_steps))
            for i, raw in enumerate(grads):
                # L2 decay on weight matrices only, not on biases.
                g = raw + config.weight_decay * params[i] if params[i].ndim == 2 else raw
                m1[i] = beta1 * m1[i] + (1 - beta1) * g
                m2[i] = beta2 * m2[i] + (1 - beta2) * g * g
                m_hat = m1[i] / (1 - beta1**step)
                v_hat = m2[i] / (1 - beta2**step)
                params[i] -= lr * m_hat / (np.sqrt(v_hat) + eps)
        history.append(epoch_loss / n)

    model = MLP(
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
        weights=tuple(p.astype(np.float32) for p in params[0::2]),
        biases=tuple(p.astype(np.float32) for p in params[1::2]),
    )
    accuracy = float(np.mean(model.predict(X64) == labels))
    report = TrainReport(
        epochs=config.epochs,
        final_loss=history[-1],
        train_accuracy=accuracy,
        seconds=time.perf_counter() - started,
        loss_history=tuple(history),
    )
    return model, report


def _loss_and_grads(params: list[F64], Z: F64, onehot: F64) -> tuple[float, list[F64]]:
    weights, biases = params[0::2], params[1::2]
    activations = [Z]
    h = Z
    for w, b in zip(weights[:-1], biases[:-1], strict=True):
        h = np.maximum(h @ w + b, 0.0)
        activations.append(h)
    probs = _softmax(h @ weights[-1] + biases[-1])
    batch = Z.shape[0]
    loss = float(-np.sum(onehot * np.log(np.clip(probs, 1e-12, 1.0))) / batch)

    grads: list[F64] = [np.empty(0)] * len(params)
    delta = (probs - onehot) / batch
    for layer in range(len(weights) - 1, -1, -1):
        grads[2 * layer] = activations[layer].T @ delta
        grads[2 * layer + 1] = delta.sum(axis=0)
        if layer:
            delta = (delta @ weights[layer].T) * (activations[layer] > 0)
    return loss, grads
