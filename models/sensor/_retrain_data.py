"""The retraining job's data: captures, the drift evidence, and the training mix.

Theory of operation. Devices upload reservoir samples of their inputs
(``.npz``: ``x`` float32 ``[n, F]``, ``y`` int64 ``[n]`` with -1 for unknown,
``time`` int64 ``[n]``). :func:`combine` turns them, with the recipe's
original synthetic data, into what one retraining run needs:

- a **drifted holdout**: a seeded share (30 %, at least
  :data:`MIN_HOLDOUT_ROWS`) of the *labelled* captured rows, never trained on;
  the new model must beat the current one there;
- the **training set**: every original training row once, plus the other
  labelled captured rows repeated so that recent data carries
  ``recent_share`` of the training mass (repetition is capped at
  :data:`MAX_REPEAT`, so a handful of rows cannot dominate);
- optional **pseudo-labels**: unlabelled captured rows the current model
  classifies with max probability >= ``pseudo_threshold`` join the recent
  rows with its predicted class. Off by default: under the demo drift the
  current model is confidently wrong (80 % of drifted rows pass 0.9 but only
  70 % of those are right), and pseudo-labels measurably pull the retrained
  model back towards the current one's mistakes (docs/models.md);
- the **calibration rows** for static int8 quantization: the recipe's
  calibration split plus captured rows, labelled or not, so activation
  ranges cover the inputs devices see now (drifted inputs outside the
  original ranges would otherwise clip);
- the **reference rows** from which the control plane builds the new
  release's drift reference: every captured row (the distribution the fleet
  sees now), with labels only when every row has one (a dataset's ``y`` is
  all or nothing).

Invariants: :func:`combine` is a pure function of its arguments (the seed
fixes the holdout split and calibration sample); the holdout and the
training rows are disjoint; every array is finite float32 / int64.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import numpy.typing as npt

from models.sensor._retrain_api import NoDataError
from models.sensor.data import CLASS_NAMES, FEATURE_NAMES, Drift

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

#: Fewest labelled captured rows held out to validate on (and to train on).
MIN_HOLDOUT_ROWS = 50
HOLDOUT_FRACTION = 0.3
#: Most times one captured row is repeated in the training set.
MAX_REPEAT = 50
#: Captured rows added to the quantization calibration set.
CALIBRATION_CAPTURED_ROWS = 1000
#: Rows of simulated drifted data when the evidence carries a drift description.
SIMULATED_ROWS = 2000


@dataclass(frozen=True)
class Capture:
    """One captured window as the control plane lists it."""

    device: str
    release: int | None
    id: int | None
    window_start: str
    rows: int
    labelled: int
    sha256: str

    @classmethod
    def from_dict(cls, item: Any) -> Capture:
        if not isinstance(item, dict):
            raise ValueError(f"a capture must be an object, got {type(item).__name__}")
        sha = item.get("artifact_sha256") or item.get("sha256")
        if not isinstance(sha, str) or len(sha) != 64:
            raise ValueError(f"capture {item!r:.120} has no artifact sha256")
        labelled = item.get("labelled", item.get("labelled_rows", 0))
        release = item.get("release")
        ident = item.get("id")
        return cls(
            id=None if ident is None else int(ident),
            device=str(item.get("device_id") or item.get("device") or "?"),
            release=None if release is None else int(release),
            window_start=str(item.get("window_start", "")),
            rows=int(item.get("rows", 0)),
            labelled=int(labelled or 0),
            sha256=sha,
        )


def parse_captures(listing: Any) -> list[Capture]:
    """The captures in a ``GET /v1/models/{m}/captures`` answer (a list or ``{"captures"}``)."""
    items = listing.get("captures") if isinstance(listing, dict) else listing
    if not isinstance(items, list):
        raise ValueError("the captures listing is neither a list nor {'captures': [...]}")
    return [Capture.from_dict(item) for item in items]


@dataclass(frozen=True, eq=False)
class Rows:
    """Captured rows: features, labels (-1 = unknown) and capture times."""

    x: F32
    y: I64
    time: I64

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def labelled(self) -> int:
        return int(np.count_nonzero(self.y >= 0))

    @classmethod
    def empty(cls) -> Rows:
        return cls(
            np.zeros((0, len(FEATURE_NAMES)), np.float32),
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
        )

    @classmethod
    def concat(cls, parts: list[Rows]) -> Rows:
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.x for p in parts]),
            np.concatenate([p.y for p in parts]),
            np.concatenate([p.time for p in parts]),
        )


def load_capture(data: bytes) -> tuple[Rows, int]:
    """Parse one capture ``.npz``; returns its usable rows and how many were dropped.

    Rows with a NaN or infinite feature are dropped (a device captures what
    it was fed, faulty sensors included); labels outside ``-1..K-1`` are
    treated as unknown.

    Raises:
        ValueError: not an ``.npz`` of the capture layout.
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: np.asarray(npz[name]) for name in ("x", "y") if name in npz.files}
            when = np.asarray(npz["time"]) if "time" in npz.files else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"not a capture .npz: {exc}") from exc
    if "x" not in arrays:
        raise ValueError("the capture has no x array")
    x = arrays["x"]
    if x.ndim != 2 or x.shape[1] != len(FEATURE_NAMES) or not np.issubdtype(x.dtype, np.number):
        raise ValueError(
            f"x must be numeric [n, {len(FEATURE_NAMES)}] for the sensor model, got {x.shape}"
        )
    n = x.shape[0]
    y = arrays.get("y", np.full(n, -1))
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must be integer [{n}], got {y.dtype} {y.shape}")
    if when is None or when.shape != (n,) or not np.issubdtype(when.dtype, np.integer):
        when = np.zeros(n, np.int64)
    x32 = x.astype(np.float32)
    keep = np.all(np.isfinite(x32), axis=1)
    labels = np.where((y >= 0) & (y < len(CLASS_NAMES)), y, -1).astype(np.int64)
    rows = Rows(x32[keep], labels[keep], when.astype(np.int64)[keep])
    return rows, int(n - np.count_nonzero(keep))


@dataclass(frozen=True)
class Evidence:
    """What the job uses from the drift evidence the control plane hands over."""

    model: str | None
    release: int | None
    cohort: str | None
    window_start: datetime | None
    simulated_drift: Drift | None
    sha256: str
    raw: dict[str, Any]

    @classmethod
    def from_bytes(cls, data: bytes) -> Evidence:
        """Parse ``DriftEvidence.to_dict()`` JSON (also accepted nested under ``"evidence"``).

        ``simulated_drift`` (``{"mean_shift", "scale", "new_regime"}``, the
        :class:`~models.sensor.data.Drift` knobs) is an addition for smoke
        runs without devices: it stands in for captures only when none exist.
        """
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise NoDataError(f"the drift evidence is not JSON: {exc}") from exc
        if isinstance(raw, dict) and isinstance(raw.get("evidence"), dict):
            raw = raw["evidence"]
        if not isinstance(raw, dict):
            raise NoDataError("the drift evidence must be a JSON object")
        try:
            drift = raw.get("simulated_drift")
            simulated = None if drift is None else Drift(**_drift_knobs(drift))
            release = raw.get("release")
            cohort = raw.get("cohort")
            start = raw.get("window_start")
            return cls(
                model=None if raw.get("model") is None else str(raw["model"]),
                release=None if release is None else int(release),
                cohort=str(cohort) if cohort else None,
                window_start=None if start is None else parse_time(str(start)),
                simulated_drift=simulated,
                sha256=hashlib.sha256(data).hexdigest(),
                raw=raw,
            )
        except (TypeError, ValueError) as exc:
            raise NoDataError(f"the drift evidence is malformed: {exc}") from exc


def _drift_knobs(value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not set(value) <= {"mean_shift", "scale", "new_regime"}:
        raise ValueError("simulated_drift takes mean_shift, scale and new_regime")
    return {key: float(v) for key, v in value.items()}


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; naive times are UTC."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


@dataclass(frozen=True, eq=False)
class Combined:
    """Everything one retraining run trains, calibrates, validates and references on."""

    train_x: F32
    train_y: I64
    holdout: tuple[F32, I64]  # drifted: labelled captured rows never trained on
    calibration: F32
    reference_x: F32
    reference_y: I64 | None
    original_rows: int
    recent_rows: int  # captured rows trained on (labelled + pseudo-labelled), before repeats
    pseudo_labelled: int
    repeat: int

    def counts(self) -> dict[str, int]:
        return {
            "train_rows": int(self.train_y.shape[0]),
            "original_rows": self.original_rows,
            "recent_rows": self.recent_rows,
            "pseudo_labelled": self.pseudo_labelled,
            "repeat": self.repeat,
            "drifted_holdout_rows": int(self.holdout[1].shape[0]),
            "calibration_rows": int(self.calibration.shape[0]),
            "reference_rows": int(self.reference_x.shape[0]),
        }


def combine(
    original: tuple[F32, I64],
    calibration: F32,
    captured: Rows,
    *,
    current_proba: F32 | None = None,
    recent_share: float = 0.2,
    pseudo_threshold: float | None = None,
    seed: int = 0,
) -> Combined:
    """Build the training mix (see the module docstring).

    ``current_proba`` (the current model's probabilities for ``captured.x``)
    is needed only for pseudo-labelling.

    Raises:
        NoDataError: too few labelled captured rows to hold out and train on.
        ValueError: ``recent_share`` outside ``(0, 1)``.
    """
    if not 0.0 < recent_share < 1.0:
        raise ValueError("recent_share must be in (0, 1)")
    rng = np.random.default_rng(seed)
    labelled = np.flatnonzero(captured.y >= 0)
    need = 2 * MIN_HOLDOUT_ROWS
    if labelled.size < need:
        raise NoDataError(
            f"only {labelled.size} of {captured.n} captured rows are labelled; need at least "
            f"{need} ({MIN_HOLDOUT_ROWS} to validate on, the rest to train on): collect "
            "ground truth with the agent's feedback API"
        )
    order = rng.permutation(labelled)
    n_hold = min(max(MIN_HOLDOUT_ROWS, round(HOLDOUT_FRACTION * labelled.size)), labelled.size // 2)
    held, trained = np.sort(order[:n_hold]), np.sort(order[n_hold:])

    recent_x, recent_y = captured.x[trained], captured.y[trained]
    pseudo = 0
    if pseudo_threshold is not None:
        if current_proba is None or current_proba.shape[0] != captured.n:
            raise ValueError("pseudo-labelling needs the current model's probabilities")
        unknown = captured.y < 0
        sure = unknown & (current_proba.max(axis=1) >= pseudo_threshold)
        pseudo = int(np.count_nonzero(sure))
        recent_x = np.concatenate([recent_x, captured.x[sure]])
        recent_y = np.concatenate([recent_y, current_proba[sure].argmax(axis=1).astype(np.int64)])

    X0, y0 = original
    wanted = recent_share * len(y0) / ((1.0 - recent_share) * len(recent_y))
    repeat = int(np.clip(round(wanted), 1, MAX_REPEAT))
    train_x = np.concatenate([X0, np.tile(recent_x, (repeat, 1))]).astype(np.float32)
    train_y = np.concatenate([y0, np.tile(recent_y, repeat)]).astype(np.int64)

    take = min(CALIBRATION_CAPTURED_ROWS, captured.n)
    sampled = np.sort(rng.choice(captured.n, size=take, replace=False))
    all_labelled = bool(np.all(captured.y >= 0))
    return Combined(
        train_x=train_x,
        train_y=train_y,
        holdout=(captured.x[held], captured.y[held]),
        calibration=np.concatenate([calibration, captured.x[sampled]]).astype(np.float32),
        reference_x=captured.x,
        reference_y=captured.y if all_labelled else None,
        original_rows=len(y0),
        recent_rows=len(recent_y),
        pseudo_labelled=pseudo,
        repeat=repeat,
    )


def dataset_npz(x: F32, y: I64 | None = None) -> bytes:
    """A dataset ``.npz`` in the layout the control plane's registry reads."""
    arrays: dict[str, npt.NDArray[Any]] = {
        "x": np.ascontiguousarray(x, np.float32),
        "feature_names": np.array(FEATURE_NAMES, dtype=np.str_),
        "class_names": np.array(CLASS_NAMES, dtype=np.str_),
    }
    if y is not None:
        arrays["y"] = np.ascontiguousarray(y, np.int64)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numeric and unicode: no pickle
    return buffer.getvalue()


__all__ = [
    "Capture",
    "Combined",
    "Evidence",
    "Rows",
    "combine",
    "dataset_npz",
    "load_capture",
    "parse_captures",
    "parse_time",
]
