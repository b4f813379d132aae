"""Synthetic predictive-maintenance data for an induction motor driving a pump.

Theory of operation: every sample is one minute of condition monitoring on one
motor. A latent operating point (load fraction, ambient temperature) drives the
physics-shaped baselines: currents and torque grow with load, rpm slips with
load, temperatures add heat to the ambient, vibration grows with load. A fault
class then adds its signature with a random severity in [0.2, 1]; weak faults
overlap the normal class, which keeps the problem from being trivially
separable (a small MLP reaches about 90-97 % accuracy).

    normal          no fault
    bearing_wear    impulsive vibration (kurtosis, crest factor), drive-end heat, noise
    misalignment    2x-rpm vibration, axial (z) vibration, heat on both bearings
    overheating     winding temperature, higher and less balanced currents

Drift knobs (:class:`Drift`) model what fleets see after deployment: sensor
offsets (``mean_shift``), sensor gain / spread changes (``scale``) and a share
of samples from an operating regime the training data never covered
(``new_regime``: overload on hot days). Labels stay truthful under drift, so
accuracy on drifted data shows what drift costs.

Invariants: ``generate`` is a pure function of ``(n, seed, drift)``; features
are finite float32; labels are int64 in ``range(len(CLASS_NAMES))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FEATURE_NAMES: tuple[str, ...] = (
    "vib_rms_x_mm_s",
    "vib_rms_y_mm_s",
    "vib_rms_z_mm_s",
    "vib_kurtosis_x",
    "vib_kurtosis_y",
    "vib_kurtosis_z",
    "vib_crest_factor",
    "vib_1x_amplitude_mm_s",
    "vib_2x_amplitude_mm_s",
    "bearing_temp_de_c",
    "bearing_temp_nde_c",
    "winding_temp_c",
    "ambient_temp_c",
    "current_a_amp",
    "current_b_amp",
    "current_c_amp",
    "supply_voltage_v",
    "speed_rpm",
    "torque_nm",
    "acoustic_db",
)
CLASS_NAMES: tuple[str, ...] = ("normal", "bearing_wear", "misalignment", "overheating")
#: Share of each class in generated data (normal is the most common state).
CLASS_PRIORS: tuple[float, ...] = (0.4, 0.2, 0.2, 0.2)

_F = {name: i for i, name in enumerate(FEATURE_NAMES)}

#: Features hit by sensor drift (``mean_shift`` and ``scale``): the vibration
#: RMS channels and the temperature probes, the sensors that age or slip.
DRIFTED_FEATURES: tuple[str, ...] = (
    "vib_rms_x_mm_s",
    "vib_rms_y_mm_s",
    "vib_rms_z_mm_s",
    "bearing_temp_de_c",
    "bearing_temp_nde_c",
    "winding_temp_c",
)
#: Nominal mean and standard deviation of each drifted feature in undrifted
#: data (rounded from a 200k-sample run); the unit of ``Drift.mean_shift``.
NOMINAL_MEAN: dict[str, float] = {
    "vib_rms_x_mm_s": 1.84,
    "vib_rms_y_mm_s": 1.70,
    "vib_rms_z_mm_s": 1.34,
    "bearing_temp_de_c": 52.2,
    "bearing_temp_nde_c": 47.5,
    "winding_temp_c": 80.2,
}
NOMINAL_STD: dict[str, float] = {
    "vib_rms_x_mm_s": 0.32,
    "vib_rms_y_mm_s": 0.29,
    "vib_rms_z_mm_s": 0.32,
    "bearing_temp_de_c": 5.5,
    "bearing_temp_nde_c": 5.3,
    "winding_temp_c": 12.8,
}


@dataclass(frozen=True)
class Drift:
    """How generated data departs from the training distribution.

    Attributes:
        mean_shift: offset added to every :data:`DRIFTED_FEATURES` column, in
            units of that feature's :data:`NOMINAL_STD`.
        scale: factor on the spread of :data:`DRIFTED_FEATURES` around their
            :data:`NOMINAL_MEAN` (1.0 = unchanged, 1.5 = 50 % wider).
        new_regime: fraction of samples, in [0, 1], drawn from an overload
            regime (load 95-125 %, ambient 8 degC hotter) unseen in training.
    """

    mean_shift: float = 0.0
    scale: float = 1.0
    new_regime: float = 0.0

    def __post_init__(self) -> None:
        if not np.isfinite(self.mean_shift):
            raise ValueError("mean_shift must be finite")
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError("scale must be a positive finite number")
        if not 0.0 <= self.new_regime <= 1.0:
            raise ValueError("new_regime must be a fraction in [0, 1]")


def generate(
    n: int, *, seed: int, drift: Drift = Drift()
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Generate ``n`` labelled samples: features float32 [n, F], labels int64 [n]."""
    if n < 0:
        raise ValueError("n must be non-negative")
    rng = np.random.default_rng(seed)
    y = rng.choice(len(CLASS_NAMES), size=n, p=np.array(CLASS_PRIORS)).astype(np.int64)
    severity = rng.uniform(0.2, 1.0, size=n)

    overload = rng.random(n) < drift.new_regime
    load = np.where(overload, rng.uniform(0.95, 1.25, n), rng.uniform(0.35, 0.95, n))
    ambient = rng.normal(24.0, 4.0, n) + np.where(overload, 8.0, 0.0)

    X = np.empty((n, len(FEATURE_NAMES)), dtype=np.float64)

    def noise(sigma: float) -> npt.NDArray[np.float64]:
        return rng.normal(0.0, sigma, n)

    rms = 1.2 + 0.9 * load
    X[:, _F["vib_rms_x_mm_s"]] = rms + noise(0.25)
    X[:, _F["vib_rms_y_mm_s"]] = 0.95 * rms + noise(0.25)
    X[:, _F["vib_rms_z_mm_s"]] = 0.7 * rms + noise(0.22)
    for axis in "xyz":
        X[:, _F[f"vib_kurtosis_{axis}"]] = 3.0 + np.abs(noise(0.45))
    X[:, _F["vib_crest_factor"]] = 3.0 + noise(0.35)
    X[:, _F["vib_1x_amplitude_mm_s"]] = 0.8 + 0.4 * load + noise(0.18)
    X[:, _F["vib_2x_amplitude_mm_s"]] = 0.3 + 0.1 * load + noise(0.12)
    X[:, _F["bearing_temp_de_c"]] = ambient + 18.0 + 14.0 * load + noise(2.5)
    X[:, _F["bearing_temp_nde_c"]] = ambient + 15.0 + 12.0 * load + noise(2.5)
    X[:, _F["winding_temp_c"]] = ambient + 35.0 + 40.0 * load**2 + noise(4.5)
    X[:, _F["ambient_temp_c"]] = ambient + noise(0.5)
    phase_current = 8.0 + 22.0 * load
    for phase in "abc":
        X[:, _F[f"current_{phase}_amp"]] = phase_current * (1.0 + noise(0.02)) + noise(0.3)
    X[:, _F["supply_voltage_v"]] = 400.0 + noise(4.0)
    X[:, _F["speed_rpm"]] = 1500.0 * (1.0 - 0.04 * load) + noise(3.0)
    X[:, _F["torque_nm"]] = 95.0 * load + noise(3.0)
    X[:, _F["acoustic_db"]] = 68.0 + 6.0 * load + noise(1.5)

    _add_faults(X, y, severity, rng)
    _apply_sensor_drift(X, drift)
    return X.astype(np.float32), y


def _add_faults(
    X: npt.NDArray[np.float64],
    y: npt.NDArray[np.int64],
    severity: npt.NDArray[np.float64],
    rng: np.random.Generator,
) -> None:
    n = len(y)
    bearing = np.where(y == CLASS_NAMES.index("bearing_wear"), severity, 0.0)
    misalign = np.where(y == CLASS_NAMES.index("misalignment"), severity, 0.0)
    overheat = np.where(y == CLASS_NAMES.index("overheating"), severity, 0.0)

    # Bearing defects: impulsive vibration shows in kurtosis and crest factor
    # before RMS moves; friction heats the drive-end bearing.
    for axis, weight in zip("xyz", (1.0, 0.8, 0.5), strict=True):
        X[:, _F[f"vib_kurtosis_{axis}"]] += 3.0 * weight * bearing
    X[:, _F["vib_crest_factor"]] += 1.4 * bearing
    X[:, _F["vib_rms_x_mm_s"]] += 0.45 * bearing
    X[:, _F["bearing_temp_de_c"]] += 6.0 * bearing
    X[:, _F["acoustic_db"]] += 3.0 * bearing

    # Misalignment: the classic 2x-rpm component and axial vibration.
    X[:, _F["vib_2x_amplitude_mm_s"]] += 1.2 * misalign
    X[:, _F["vib_1x_amplitude_mm_s"]] += 0.35 * misalign
    X[:, _F["vib_rms_z_mm_s"]] += 0.8 * misalign
    X[:, _F["bearing_temp_de_c"]] += 3.0 * misalign
    X[:, _F["bearing_temp_nde_c"]] += 3.0 * misalign

    # Overheating (blocked cooling or a weak phase): hot windings, more current,
    # and one phase drawing more than the others.
    X[:, _F["winding_temp_c"]] += 26.0 * overheat
    X[:, _F["bearing_temp_nde_c"]] += 3.0 * overheat
    weak_phase = rng.integers(0, 3, n)
    for k, phase in enumerate("abc"):
        extra = np.where(weak_phase == k, 3.0, 0.8)
        X[:, _F[f"current_{phase}_amp"]] += extra * overheat


def _apply_sensor_drift(X: npt.NDArray[np.float64], drift: Drift) -> None:
    if drift.mean_shift == 0.0 and drift.scale == 1.0:
        return
    for name in DRIFTED_FEATURES:
        col = _F[name]
        mean = NOMINAL_MEAN[name]
        X[:, col] = mean + drift.scale * (X[:, col] - mean) + drift.mean_shift * NOMINAL_STD[name]
