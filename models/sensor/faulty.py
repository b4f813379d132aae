"""A deliberately broken sensor model, for rollback drills and the demo.

It is the trained network with its output classes rotated by one (``normal``
answers as ``bearing_wear``, and so on): it loads, runs, passes a schema check
and stays confident, so only the rollout's *quality* gate, which compares its
outputs on the wave's devices with the previous release's, can tell it is bad.
That is the failure mode drills must cover: a model that is wrong, not one
that crashes.

    python -m models.sensor.faulty --weights build/sensor/sensor-weights.npz --out bad.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from models.sensor.export import export_onnx
from models.sensor.train import MLP


def rotate_classes(model: MLP, by: int = 1) -> MLP:
    """The same network with output column ``k`` moved to ``(k + by) % K``."""
    weights, biases = list(model.weights), list(model.biases)
    weights[-1] = np.roll(weights[-1], by, axis=1)
    biases[-1] = np.roll(biases[-1], by)
    return MLP(model.mean, model.std, tuple(weights), tuple(biases))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, required=True, help="sensor-weights.npz")
    parser.add_argument("--out", type=Path, required=True, help="the broken float ONNX model")
    args = parser.parse_args(argv)
    broken = rotate_classes(MLP.load(args.weights))
    export_onnx(broken, args.out, metadata={"edgefleet.faulty": "classes rotated by one"})
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
