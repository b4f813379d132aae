"""The model host: one active model, swapped atomically, served to many threads.

Theory of operation. :class:`ModelHost` holds one *generation*
(:class:`ActiveModel`): a loaded runtime, its :class:`ModelInfo`, input checks
precomputed from its specs, and a fresh :class:`ServingStats`.
:meth:`ModelHost.activate` loads a runtime through
:func:`fleetcore.runtimes.load_model`, warms it with one inference of zeros
(free dimensions as 1), and only then publishes it with one attribute store.
:meth:`ModelHost.infer` reads that attribute once and stays on what it got, so
a call that started on the old model finishes on it: the call's reference
keeps the old generation alive, and when the last such call returns the
interpreter's reference count releases it. No lock is taken per call for
this; the only locks are the activation lock (one activation at a time) and
the statistics lock (a few integer updates).

Feeds are checked before the runtime runs: exactly the model's input names,
numpy arrays of exactly the declared dtype and rank, every fixed dimension
matching, no empty axis. A mismatch raises :class:`InputError`, counted apart
from model errors; a runtime failure on valid feeds is a model error.

Invariants:

* ``infer`` runs a feed on exactly one generation, and returns what that
  generation's runtime returned.
* A generation is published only after its runtime loaded and ran once; a
  failed activation leaves the previous model serving.
* Each activation starts a new :class:`ServingStats`, so probation figures read
  from ``host.stats`` after ``activate`` count only the new model.
* Latency buckets are fixed (quarter-octave, 1 µs to ~67 s), so histograms from
  any device and any window add up bucket by bucket.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.serving_errors import InputError, NoModelError
from fleetcore.errors import RuntimeLoadError
from fleetcore.runtimes import ModelRuntime, load_model
from fleetcore.telemetry import LATENCY_BUCKET_BOUNDS_NS
from fleetcore.tensors import TensorSpec

Array = npt.NDArray[Any]
_NDARRAY = np.ndarray
_bucket = bisect.bisect_left
_now = time.perf_counter_ns


@dataclass(frozen=True)
class ModelInfo:
    """What is being served. ``runtime``, versions and specs are filled in by activation."""

    model: str
    release: int
    sha256: str
    format: str
    runtime: str = ""
    runtime_version: str = ""
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()

    def identity(self) -> dict[str, Any]:
        """The short form sent with every inference answer."""
        return {"model": self.model, "release": self.release, "sha256": self.sha256}

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.identity(),
            "format": self.format,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "inputs": [spec.to_dict() for spec in self.inputs],
            "outputs": [spec.to_dict() for spec in self.outputs],
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> ModelInfo:
        """Inverse of :meth:`to_dict`; raises KeyError, TypeError, ValueError or MetadataError."""
        return cls(
            model=str(obj["model"]),
            release=int(obj["release"]),
            sha256=str(obj["sha256"]),
            format=str(obj["format"]),
            runtime=str(obj.get("runtime", "")),
            runtime_version=str(obj.get("runtime_version", "")),
            inputs=tuple(TensorSpec.from_dict(s) for s in obj.get("inputs", [])),
            outputs=tuple(TensorSpec.from_dict(s) for s in obj.get("outputs", [])),
        )


@dataclass(frozen=True)
class StatsSnapshot:
    """Counters and latency percentiles (ms) of one model over one window."""

    inferences: int
    errors: int
    input_errors: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    histogram: tuple[int, ...]  # counts per bucket of LATENCY_BUCKET_BOUNDS_NS, plus overflow

    @property
    def error_rate(self) -> float:
        """Model errors over model runs (input errors excluded); 0 when nothing ran."""
        runs = self.inferences + self.errors
        return self.errors / runs if runs else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ServingStats:
    """Thread-safe inference counters and a fixed log-spaced latency histogram."""

    __slots__ = ("_counts", "_errors", "_inferences", "_input_errors", "_lock", "_max", "_total")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self._inferences = 0
        self._errors = 0
        self._input_errors = 0
        self._total = 0
        self._max = 0
        self._counts = [0] * (len(LATENCY_BUCKET_BOUNDS_NS) + 1)

    def record(self, latency_ns: int) -> None:
        """Count one successful inference that took ``latency_ns``."""
        index = _bucket(LATENCY_BUCKET_BOUNDS_NS, latency_ns)
        lock = self._lock
        lock.acquire()  # not ``with``: this is on every call and acquire/release is cheaper
        try:
            self._inferences += 1
            self._total += latency_ns
            self._counts[index] += 1
            if latency_ns > self._max:  # noqa: PLR1730  (no call to max(): every inference)
                self._max = latency_ns
        finally:
            lock.release()

    def record_error(self) -> None:
        with self._lock:
            self._errors += 1

    def record_input_error(self) -> None:
        with self._lock:
            self._input_errors += 1

    def reset(self) -> None:
        with self._lock:
            self._clear()

    def snapshot(self, *, reset: bool = False) -> StatsSnapshot:
        """The figures so far; with ``reset``, atomically start a new window."""
        with self._lock:
            counts = tuple(self._counts)
            n, errors, input_errors = self._inferences, self._errors, self._input_errors
            total, peak = self._total, self._max
            if reset:
                self._clear()
        return StatsSnapshot(
            inferences=n,
            errors=errors,
            input_errors=input_errors,
            mean_ms=total / n / 1e6 if n else 0.0,
            p50_ms=_percentile_ns(counts, n, 0.50, peak) / 1e6,
            p95_ms=_percentile_ns(counts, n, 0.95, peak) / 1e6,
            p99_ms=_percentile_ns(counts, n, 0.99, peak) / 1e6,
            max_ms=peak / 1e6,
            histogram=counts,
        )


def _percentile_ns(counts: tuple[int, ...], n: int, q: float, peak: int) -> float:
    """Estimate of the q-quantile: geometric middle of its bucket, capped at the maximum."""
    if n == 0:
        return 0.0
    rank = max(1, math.ceil(q * n))
    seen = 0
    bounds = LATENCY_BUCKET_BOUNDS_NS
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            if index == 0:
                return float(min(bounds[0], peak))
            if index == len(bounds):
                return float(peak)
            return min(math.sqrt(bounds[index - 1] * bounds[index]), float(peak))
    return float(peak)


class ActiveModel:
    """One activated model (a generation): runtime, info, input checks and statistics.

    Holding one pins that model: a caller that needs several steps on the same
    model (convert with its specs, run, report which model answered) takes it
    once from :meth:`ModelHost.current` and uses it throughout.
    """

    __slots__ = ("_checks", "_count", "info", "runtime", "stats")

    def __init__(self, runtime: ModelRuntime, info: ModelInfo) -> None:
        self.runtime = runtime
        self.info = info
        self.stats = ServingStats()
        self._count = len(info.inputs)
        # (name, dtype, rank, ((axis, size), ...) for the fixed dimensions)
        self._checks = tuple(
            (
                spec.name,
                np.dtype(spec.dtype),
                len(spec.shape),
                tuple((axis, size) for axis, size in enumerate(spec.shape) if size is not None),
            )
            for spec in info.inputs
        )

    def infer(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        """Check ``feeds``, run them, and count the outcome (see :meth:`ModelHost.infer`)."""
        try:
            self.check(feeds)
        except InputError:
            self.stats.record_input_error()
            raise
        start = _now()
        try:
            outputs = self.runtime.run_validated(feeds)
        except RuntimeLoadError:
            self.stats.record_error()
            raise
        except Exception as exc:
            self.stats.record_error()
            raise RuntimeLoadError(f"the runtime failed: {type(exc).__name__}: {exc}") from exc
        self.stats.record(_now() - start)
        return outputs

    def check(self, feeds: Mapping[str, Array]) -> None:
        """Raise InputError unless ``feeds`` fit the model's inputs exactly."""
        if type(feeds) is not dict and not isinstance(feeds, Mapping):
            raise InputError(f"feeds must be a mapping of input name to array, not {type(feeds)}")
        if len(feeds) != self._count:
            raise self._names_error(feeds)
        for name, dtype, rank, fixed in self._checks:
            try:
                array = feeds[name]
            except KeyError:
                raise self._names_error(feeds) from None
            if type(array) is not _NDARRAY and not isinstance(array, _NDARRAY):
                raise InputError(f"input {name!r} must be a numpy array, not {type(array)}")
            if array.dtype is not dtype and array.dtype != dtype:
                raise InputError(f"input {name!r} has dtype {array.dtype}, the model takes {dtype}")
            shape = array.shape
            if len(shape) != rank or 0 in shape:
                raise self._shape_error(name, shape)
            for axis, size in fixed:
                if shape[axis] != size:
                    raise self._shape_error(name, shape)
        if self._count > 1:
            batches = {
                s.name: feeds[s.name].shape[0] for s in self.info.inputs if s.shape[0] is None
            }
            if len(set(batches.values())) > 1:
                raise InputError(f"inputs disagree on the batch size: {batches}")

    def _names_error(self, feeds: Mapping[str, Array]) -> InputError:
        want = sorted(spec.name for spec in self.info.inputs)
        return InputError(f"inputs {sorted(map(str, feeds))} do not match the model's {want}")

    def _shape_error(self, name: str, shape: tuple[int, ...]) -> InputError:
        spec = next(s for s in self.info.inputs if s.name == name)
        expected = ["N" if d is None else d for d in spec.shape]
        empty = " (an empty axis)" if 0 in shape else ""
        return InputError(
            f"input {name!r} has shape {list(shape)}{empty}, the model takes {expected}"
        )


def _complete(info: ModelInfo, runtime: ModelRuntime, fmt: str) -> ModelInfo:
    """``info`` with the runtime's facts; refuse specs that differ from declared ones."""
    for kind, declared, actual in (
        ("inputs", info.inputs, runtime.inputs),
        ("outputs", info.outputs, runtime.outputs),
    ):
        if declared and tuple(declared) != tuple(actual):
            raise RuntimeLoadError(
                f"the model's {kind} {[s.to_dict() for s in actual]} differ from the "
                f"declared {[s.to_dict() for s in declared]}"
            )
    filled = replace(info, format=fmt, inputs=runtime.inputs, outputs=runtime.outputs)
    return replace(filled, runtime=runtime.runtime, runtime_version=runtime.runtime_version)


def warmup_feeds(inputs: tuple[TensorSpec, ...]) -> dict[str, Array]:
    """Zeros for every input, free dimensions set to 1."""
    return {
        spec.name: np.zeros(tuple(1 if d is None else d for d in spec.shape), np.dtype(spec.dtype))
        for spec in inputs
    }


class ModelHost:
    """Holds the active model and runs inferences on it from any number of threads."""

    def __init__(self, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self._threads = threads
        self._active: ActiveModel | None = None
        self._activation = threading.Lock()
        self._idle_stats = ServingStats()

    def activate(self, path: Path, fmt: str, info: ModelInfo) -> None:
        """Load, warm up and switch to the model at ``path``.

        Raises:
            RuntimeLoadError: the runtime cannot load or run the model, or its
                specs differ from non-empty ``info.inputs`` / ``info.outputs``.
                The previous model keeps serving.
        """
        with self._activation:
            runtime = load_model(Path(path), fmt, threads=self._threads)
            generation = ActiveModel(runtime, _complete(info, runtime, fmt))
            try:
                runtime.run(warmup_feeds(generation.info.inputs))
            except RuntimeLoadError as exc:
                raise RuntimeLoadError(f"warm-up inference failed: {exc}") from exc
            self._active = generation

    def deactivate(self) -> None:
        """Stop serving; calls already running finish on the model they started with."""
        with self._activation:
            self._active = None

    def current(self) -> ActiveModel:
        """The active model, pinned for as long as the caller holds it; NoModelError if none."""
        active = self._active
        if active is None:
            raise NoModelError("no model is active")
        return active

    @property
    def info(self) -> ModelInfo | None:
        active = self._active
        return None if active is None else active.info

    @property
    def stats(self) -> ServingStats:
        """Statistics of the active model (of nothing, when no model is active)."""
        active = self._active
        return self._idle_stats if active is None else active.stats

    def infer(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        """Run one batch on the active model.

        Raises:
            NoModelError: nothing is active.
            InputError: ``feeds`` do not fit the model (not a model error).
            RuntimeLoadError: the runtime failed (counted as a model error).
        """
        active = self._active
        if active is None:
            raise NoModelError("no model is active")
        return active.infer(feeds)  # the one read of _active: the call stays on this model


__all__ = [
    "LATENCY_BUCKET_BOUNDS_NS",
    "ActiveModel",
    "ModelHost",
    "ModelInfo",
    "ServingStats",
    "StatsSnapshot",
    "warmup_feeds",
]
