"""Test-only switch: make this agent's runtime disagree with the signed smoke vectors.

With ``EDGEFLEET_AGENT_FAULT=smoke`` in the environment, the smoke test runs
the real model in the real runtime as always, but compares its outputs with
the expected outputs shifted by one: the comparison fails exactly as it does on
a device whose runtime computes differently (another CPU, a broken build).
End-to-end tests use it to make one labelled group of real agents fail their
smoke test. Never set it on a real device.
"""

from __future__ import annotations

import os

import numpy as np

FAULT_ENV = "EDGEFLEET_AGENT_FAULT"


def smoke_fault() -> bool:
    return os.environ.get(FAULT_ENV, "").strip() == "smoke"


def shifted(expected: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: np.asarray(value) + 1.0 for name, value in expected.items()}


__all__ = ["FAULT_ENV", "shifted", "smoke_fault"]
