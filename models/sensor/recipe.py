"""The fixed recipe shared by the pipeline and the TFLite build: splits and training.

Theory of operation: one ``seed`` determines everything. Each split draws from
its own generator seed ``seed * 16 + k`` (k fixed per split, below), so
changing the sample count of one split never changes another, and the TFLite
build retrains exactly the weights the pipeline trains for the same
``(samples, seed)``. Defaults are the values the committed artifacts were built
with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.sensor.data import CLASS_NAMES, Drift, generate
from models.sensor.train import MLP, TrainConfig, TrainReport, train

DEFAULT_SAMPLES = 20_000
DEFAULT_SEED = 7
#: Calibration rows for static quantization (more adds time, not accuracy).
CALIBRATION_SAMPLES = 1_000
#: The drift shown by the pipeline: sensor offset and gain plus 30 % overload.
DEMO_DRIFT = Drift(mean_shift=1.0, scale=1.3, new_regime=0.3)

_SPLIT_INDEX = {"train": 0, "calibration": 1, "heldout": 2, "reference": 3, "drifted": 4}

Features = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class Splits:
    """Independent datasets drawn from the generator, one seed each."""

    train: tuple[Features, Labels]
    calibration: Features
    heldout: tuple[Features, Labels]
    reference: tuple[Features, Labels]
    drifted: tuple[Features, Labels]
    drift: Drift


def split_seed(seed: int, split: str) -> int:
    """Generator seed of one split."""
    return seed * 16 + _SPLIT_INDEX[split]


def heldout(samples: int = DEFAULT_SAMPLES, seed: int = DEFAULT_SEED) -> tuple[Features, Labels]:
    """Only the held-out split (what evaluation and tests need)."""
    return generate(max(samples // 4, 1), seed=split_seed(seed, "heldout"))


def make_splits(
    samples: int = DEFAULT_SAMPLES, seed: int = DEFAULT_SEED, drift: Drift = DEMO_DRIFT
) -> Splits:
    """Train on ``samples`` rows; held-out, reference and drifted get a quarter each."""
    if samples < 100:
        raise ValueError("need at least 100 training samples")
    quarter = samples // 4
    calibration, _ = generate(
        min(CALIBRATION_SAMPLES, samples), seed=split_seed(seed, "calibration")
    )
    return Splits(
        train=generate(samples, seed=split_seed(seed, "train")),
        calibration=calibration,
        heldout=heldout(samples, seed),
        reference=generate(quarter, seed=split_seed(seed, "reference")),
        drifted=generate(quarter, seed=split_seed(seed, "drifted"), drift=drift),
        drift=drift,
    )


def train_config(seed: int = DEFAULT_SEED) -> TrainConfig:
    return TrainConfig(seed=seed)


def fit(splits: Splits, seed: int = DEFAULT_SEED) -> tuple[MLP, TrainReport]:
    """Train the sensor MLP on the training split."""
    X, y = splits.train
    return train(X, y, n_classes=len(CLASS_NAMES), config=train_config(seed))
