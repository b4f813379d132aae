"""Fleet drift tests: a seeded reference, device windows made by a real accumulator, fakes.

The reference is 20 000 standard-normal rows of four features and the
probabilities of a fixed linear softmax model over them, with labels drawn
from those probabilities (so the model is calibrated and the reference's
accuracy table means something). The class prior is skewed on purpose: a
model that swaps its classes must change the class mix, or the quality
gate's class test would have nothing to see.

Device windows are made the way an agent makes them: a
:class:`~fleetcore.drift.summary.DriftAccumulator` over the reference, fed
rows from the same generator (optionally shifted), taken once per window.

:class:`FakeStore` and :class:`FakeArtifacts` hold just what
:class:`~control_plane.drift.service.DriftService` reads (models, releases,
versions, device labels, encoded windows, the reference artifact), so the
service's real decode, split and report code runs without a database.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import ParamSpec, cast

import numpy as np
import numpy.typing as npt

from control_plane.artifacts.port import ArtifactStore
from control_plane.drift.analysis import AnalysisSettings, Window
from control_plane.drift.service import DriftService
from control_plane.store import Store
from fleetcore.drift import DriftReference, build_reference
from fleetcore.drift.encoding import encode
from fleetcore.drift.summary import DriftAccumulator, DriftSummary, WindowKey

FEATURES = ("f0", "f1", "f2", "f3")
CLASSES = ("a", "b", "c")
MODEL = "sensor"
#: A Monday, 10:00 UTC; windows are 60 s long and aligned to it.
T0 = datetime(2025, 3, 3, 10, 0, tzinfo=timezone.utc)
START = int(T0.timestamp())
WINDOW_S = 60
SETTINGS = AnalysisSettings(bucket_s=WINDOW_S, min_samples=80, persist_k=3, persist_m=4)
P = ParamSpec("P")

_WEIGHTS = np.array(
    [[1.2, -0.4, 0.0], [0.0, 0.9, -0.6], [-0.5, 0.0, 0.8], [0.3, 0.3, -0.3]], dtype=np.float64
)
#: Class a is the most frequent prediction, c the rarest.
_BIAS = np.array([0.9, 0.1, -0.6], dtype=np.float64)


def softmax(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def rows(
    rng: np.random.Generator, n: int, shift: dict[int, float] | None = None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """``n`` inputs, their probabilities and labels drawn from them.

    ``shift`` adds that many standard deviations to a column."""
    x = rng.standard_normal((n, len(FEATURES)))
    for column, sd in (shift or {}).items():
        x[:, column] += sd
    p = softmax(x @ _WEIGHTS + _BIAS)
    labels = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return x, p, np.minimum(labels, len(CLASSES) - 1).astype(np.int64)


def make_reference(*, labels: bool = True, seed: int = 0) -> DriftReference:
    x, p, y = rows(np.random.default_rng(seed), 20_000)
    return build_reference(x, p, y if labels else None, feature_names=FEATURES, class_names=CLASSES)


REFERENCE = make_reference()
UNLABELLED = make_reference(labels=False)


def device(i: int) -> str:
    return f"dev-{i:04d}"


def device_summaries(
    reference: DriftReference,
    name: str,
    count: int,
    per_window: int,
    *,
    seed: int,
    shift: dict[int, float] | None = None,
    first: int = 0,
    release: int = 1,
    feedback: int = 0,
    rotate: int = 0,
) -> list[DriftSummary]:
    """``count`` consecutive 60 s windows of one device, ``per_window`` samples each.

    ``feedback`` labelled predictions are recorded per window (their true
    outcome); ``rotate`` shifts every probability vector by that many classes
    (a model that confuses its classes).
    """
    rng = np.random.default_rng(seed)
    accumulator = DriftAccumulator(reference)
    out = []
    for k in range(first, first + count):
        x, p, y = rows(rng, per_window, shift)
        p = np.roll(p, rotate, axis=1)
        accumulator.update(x, p)
        for i in range(min(feedback, per_window)):
            accumulator.feedback(float(p[i].max()), bool(int(np.argmax(p[i])) == int(y[i])))
        key = WindowKey(
            device=name,
            model=MODEL,
            release=release,
            reference=reference.digest(),
            start=START + k * WINDOW_S,
            length=WINDOW_S,
            seq=k + 1,
        )
        out.append(DriftSummary(key, accumulator.take()))
    return out


def _as_windows(make: Callable[P, list[DriftSummary]]) -> Callable[P, list[Window]]:
    def windows(*args: P.args, **kwargs: P.kwargs) -> list[Window]:
        return [
            Window(s.key.device, s.key.release, s.key.start, s.key.length, s.body)
            for s in make(*args, **kwargs)
        ]

    return windows


#: :func:`device_summaries`, as the stored windows the service reads.
device_windows = _as_windows(device_summaries)


# -- fakes for the service ---------------------------------------------------------------------


@dataclass
class _Release:
    version_id: int


@dataclass
class _Version:
    drift_reference_sha256: str | None


@dataclass
class _Device:
    labels: dict[str, str]
    id: str = ""


@dataclass
class _StoredWindow:
    device_id: str
    window_start: datetime
    payload: bytes


@dataclass
class FakeStore:
    """What the drift service reads from the store, in memory."""

    references: dict[int, DriftReference | None] = field(default_factory=dict)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    summaries: list[DriftSummary] = field(default_factory=list)
    payloads: list[tuple[str, int, bytes]] = field(default_factory=list)

    def list_models(self) -> list[str]:
        return [MODEL]

    def get_release(self, model: str, release: int) -> _Release | None:
        return _Release(release) if model == MODEL and release in self.references else None

    def get_version_by_id(self, version_id: int) -> _Version:
        reference = self.references[version_id]
        return _Version(None if reference is None else reference.digest())

    def get_device(self, device_id: str) -> _Device | None:
        found = self.labels.get(device_id)
        return None if found is None else _Device(found, device_id)

    def list_devices(
        self, *, include_decommissioned: bool = False, after: str | None = None, limit: int = 1000
    ) -> list[_Device]:
        ids = sorted(d for d in self.labels if after is None or d > after)[:limit]
        return [_Device(self.labels[d], d) for d in ids]

    def drift_windows(
        self,
        model: str,
        *,
        release: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[_StoredWindow]:
        stored = [(s.key.device, s.key.release, s.key.start, encode(s)) for s in self.summaries]
        stored += [(d, 1, start, payload) for d, start, payload in self.payloads]
        out = []
        for name, counter, start, payload in sorted(stored, key=lambda s: (s[2], s[0])):
            when = datetime.fromtimestamp(start, timezone.utc)
            if model != MODEL or (release is not None and counter != release):
                continue
            if (since is not None and when < since) or (until is not None and when >= until):
                continue
            out.append(_StoredWindow(name, when, payload))
        return out


@dataclass
class FakeArtifacts:
    blobs: dict[str, bytes] = field(default_factory=dict)

    @contextmanager
    def open(self, sha256: str) -> Iterator[io.BytesIO]:
        yield io.BytesIO(self.blobs[sha256])


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


def drift_service(
    store: FakeStore,
    *,
    now: datetime | None = None,
    settings: AnalysisSettings = SETTINGS,
) -> DriftService:
    """A real :class:`DriftService` over the fakes; ``now`` defaults to an hour after T0."""
    artifacts = FakeArtifacts(
        {r.digest(): r.to_bytes() for r in store.references.values() if r is not None}
    )
    return DriftService(
        cast(Store, store),
        cast(ArtifactStore, artifacts),
        settings,
        Clock(now or T0 + timedelta(hours=1)),
    )


def fleet(
    shifted: Sequence[int],
    *,
    devices: int = 4,
    count: int = 6,
    per_window: int = 120,
    shift: dict[int, float] | None = None,
    reference: DriftReference = REFERENCE,
) -> list[Window]:
    """Windows of ``devices`` devices; those in ``shifted`` get ``shift`` (f1 + 0.5 sd)."""
    out: list[Window] = []
    for i in range(devices):
        moved = (shift or {1: 0.5}) if i in shifted else None
        out += device_windows(reference, device(i), count, per_window, seed=100 + i, shift=moved)
    return out


__all__ = [
    "CLASSES",
    "FEATURES",
    "MODEL",
    "REFERENCE",
    "SETTINGS",
    "START",
    "T0",
    "UNLABELLED",
    "WINDOW_S",
    "Clock",
    "FakeArtifacts",
    "FakeStore",
    "device",
    "device_summaries",
    "device_windows",
    "drift_service",
    "fleet",
    "make_reference",
    "rows",
    "softmax",
]
