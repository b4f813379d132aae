"""Real telemetry reports and drift summaries for the ingestion tests, and a store to take them.

Summaries are made the way an agent makes them: a :class:`DriftAccumulator`
over a real :class:`DriftReference`, encoded by :mod:`fleetcore.drift.encoding`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from control_plane.db.engine import make_engine
from control_plane.db.migrate import upgrade
from control_plane.store import ArtifactRecord, Store
from control_plane.store.sql import SqlStore
from fleetcore.drift import DriftReference, build_reference
from fleetcore.drift.encoding import encode
from fleetcore.drift.summary import DriftAccumulator, DriftSummary, WindowKey
from fleetcore.telemetry import LATENCY_BUCKETS, TelemetryReport
from tests.contract.test_device_store import device, device_id
from tests.contract.test_store import add_version, release_record

T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)
MODEL = "sensor"
FEATURES = ("a", "b", "c")
CLASSES = ("x", "y")


def make_reference(seed: int = 0) -> DriftReference:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, len(FEATURES)))
    logits = rng.normal(size=(400, len(CLASSES)))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return build_reference(x, p, feature_names=FEATURES, class_names=CLASSES)


REFERENCE = make_reference()


def summary(
    n: int,
    seq: int,
    *,
    start: int | None = None,
    length: int = 60,
    release: int = 1,
    reference: str | None = None,
    rows: int = 25,
    device: str | None = None,
    shift: float = 0.0,
) -> DriftSummary:
    acc = DriftAccumulator(REFERENCE)
    rng = np.random.default_rng(n * 1000 + seq)
    x = rng.normal(loc=shift, size=(rows, len(FEATURES)))
    logits = rng.normal(size=(rows, len(CLASSES)))
    acc.update(x, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
    key = WindowKey(
        device=device or device_id(n),
        model=MODEL,
        release=release,
        reference=reference or REFERENCE.digest(),
        start=int(T0.timestamp()) + (seq - 1) * length if start is None else start,
        length=length,
        seq=seq,
    )
    return DriftSummary(key, acc.take())


def drift_bytes(n: int, seq: int, **options: object) -> bytes:
    return encode(summary(n, seq, **options))  # type: ignore[arg-type]


def zip_bomb(n: int, seq: int) -> bytes:
    """A valid header whose zlib body inflates to 16 MiB of zeros."""
    good = drift_bytes(n, seq)
    names = 2 + len(device_id(n)) + len(MODEL)
    header = bytearray(good[: 62 + names])
    header[5] |= 0x01  # flags: compressed
    return bytes(header) + zlib.compress(b"\0" * (16 << 20), 9)


def telemetry(n: int, seq: int, *, minutes: int = 0, **changes: object) -> TelemetryReport:
    buckets = [0] * LATENCY_BUCKETS
    buckets[20], buckets[30] = 7, 3
    values: dict[str, object] = {
        "device": device_id(n),
        "seq": seq,
        "time": T0,
        "window_start": int(T0.timestamp()) + 60 * (minutes or seq),
        "window_s": 60,
        "model": MODEL,
        "release": 1,
        "inferences": 10,
        "errors": 1,
        "input_errors": 0,
        "latency_buckets": tuple(buckets),
        "cpu_percent": 3.5,
        "rss_bytes": 1 << 20,
        "disk_free_bytes": 1 << 30,
    }
    values.update(changes)
    return TelemetryReport(**values)  # type: ignore[arg-type]


@dataclass
class Stocked:
    store: Store
    url: str


def stocked_store(tmp_path: Path, devices: int = 3) -> Stocked:
    """A migrated SQLite store with ``devices`` devices and release 1 of the model,
    whose signed drift reference is :data:`REFERENCE`; release 2 has none."""
    url = f"sqlite:///{tmp_path / 'edgefleet.db'}"
    upgrade(url)
    store = SqlStore(make_engine(url))
    stock(store, devices)
    return Stocked(store, url)


def stock(store: Store, devices: int) -> None:
    for n in range(1, devices + 1):
        store.add_device(device(n))
    digest = REFERENCE.digest()
    store.add_artifact(ArtifactRecord(digest, len(REFERENCE.to_bytes()), "json", T0))
    with_ref = add_version(store, MODEL, "1.0.0", drift_reference_sha256=digest)
    store.create_release(release_record(with_ref, 1))
    without = add_version(store, MODEL, "1.1.0")
    store.create_release(release_record(without, 2))


__all__ = [
    "MODEL",
    "REFERENCE",
    "T0",
    "Stocked",
    "drift_bytes",
    "stock",
    "stocked_store",
    "summary",
    "telemetry",
    "zip_bomb",
]
