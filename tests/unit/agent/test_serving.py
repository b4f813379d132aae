"""agent.serving: the model host on real onnxruntime and real TFLite interpreters."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.serving import (
    LATENCY_BUCKET_BOUNDS_NS,
    ModelHost,
    ModelInfo,
    ServingStats,
    warmup_feeds,
)
from agent.serving_errors import InputError, NoModelError
from fleetcore.errors import RuntimeLoadError
from fleetcore.runtimes import available_runtimes
from fleetcore.tensors import TensorSpec
from models.tiny import FEATURES, tiny_onnx_bytes

needs_tflite = pytest.mark.skipif(
    not set(available_runtimes()) & {"ai-edge-litert", "tflite-runtime"},
    reason="no TFLite interpreter",
)
X = np.linspace(-1.0, 1.0, 2 * FEATURES, dtype=np.float32).reshape(2, FEATURES)


def tiny(tmp_path: Path, seed: int) -> Path:
    path = tmp_path / f"tiny-{seed}.onnx"
    path.write_bytes(tiny_onnx_bytes(seed))
    return path


def info(name: str = "tiny", release: int = 1, fmt: str = "onnx") -> ModelInfo:
    return ModelInfo(model=name, release=release, sha256=f"{release:064x}", format=fmt)


@pytest.fixture
def host(tmp_path: Path) -> ModelHost:
    served = ModelHost()
    served.activate(tiny(tmp_path, 0), "onnx", info())
    return served


class _Gated:
    """A real runtime whose runs wait for a gate: holds a call in flight during a swap."""

    def __init__(self, inner: Any, gate: threading.Event, started: threading.Event) -> None:
        self.inner, self.gate, self.started = inner, gate, started

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.started.set()
        assert self.gate.wait(10)
        result: dict[str, np.ndarray] = self.inner.run(feeds)
        return result

    run_validated = run


class _Broken:
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeLoadError("onnxruntime failed to run the model: boom")

    run_validated = run


# -- activation and info ------------------------------------------------------


def test_activate_fills_in_runtime_facts_and_serves(host: ModelHost, tmp_path: Path) -> None:
    served = host.info
    assert served is not None
    assert (served.runtime, served.format) == ("onnxruntime", "onnx")
    assert served.runtime_version
    assert served.inputs == (TensorSpec("features", "float32", (None, FEATURES)),)
    assert [s.name for s in served.outputs] == ["probabilities"]
    out = host.infer({"features": X})["probabilities"]
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    assert ModelInfo.from_dict(served.to_dict()) == served


def test_no_model_before_activation_and_after_deactivate(host: ModelHost) -> None:
    with pytest.raises(NoModelError):
        ModelHost().infer({"features": X})
    host.deactivate()
    assert host.info is None
    with pytest.raises(NoModelError):
        host.infer({"features": X})
    with pytest.raises(NoModelError):
        host.current()


def test_a_failed_activation_keeps_the_old_model(host: ModelHost, tmp_path: Path) -> None:
    before = host.infer({"features": X})["probabilities"]
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(tiny_onnx_bytes(1)[:40])
    with pytest.raises(RuntimeLoadError):
        host.activate(corrupt, "onnx", info(release=2))
    with pytest.raises(RuntimeLoadError, match="differ from the declared"):
        wrong = TensorSpec("features", "float32", (None, FEATURES + 1))
        host.activate(
            tiny(tmp_path, 1), "onnx", ModelInfo("tiny", 2, "0" * 64, "onnx", inputs=(wrong,))
        )
    assert host.info is not None and host.info.release == 1
    np.testing.assert_array_equal(host.infer({"features": X})["probabilities"], before)


def test_warmup_feeds_are_zeros_with_free_dimensions_as_one() -> None:
    feeds = warmup_feeds((TensorSpec("a", "int8", (None, 3)), TensorSpec("b", "float32", (2,))))
    assert feeds["a"].shape == (1, 3) and feeds["a"].dtype == np.int8
    assert feeds["b"].shape == (2,) and not feeds["b"].any()


# -- input checks -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        ({}, "do not match"),
        ({"other": X}, "do not match"),
        ({"features": X, "extra": X}, "do not match"),
        ({"features": X.astype(np.float64)}, "dtype float64"),
        ({"features": X.astype(np.int32)}, "dtype int32"),
        ({"features": X[0]}, "shape"),
        ({"features": X[:, :3]}, "shape"),
        ({"features": X[:0]}, "empty axis"),
        ({"features": X.tolist()}, "numpy array"),
        ({"features": X.astype(">f4")}, "dtype >f4"),
    ],
)
def test_bad_feeds_are_input_errors_not_model_errors(
    host: ModelHost, feeds: dict[str, Any], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        host.infer(feeds)
    figures = host.stats.snapshot()
    assert (figures.inferences, figures.errors, figures.input_errors) == (0, 0, 1)


def test_feeds_must_be_a_mapping(host: ModelHost) -> None:
    with pytest.raises(InputError, match="mapping"):
        host.infer([X])  # type: ignore[arg-type]


def test_runtime_failures_count_as_model_errors(host: ModelHost) -> None:
    host.current().runtime = _Broken()  # type: ignore[assignment]
    with pytest.raises(RuntimeLoadError, match="boom"):
        host.infer({"features": X})
    figures = host.stats.snapshot()
    assert (figures.inferences, figures.errors, figures.input_errors) == (0, 1, 0)
    assert figures.error_rate == 1.0


# -- hot swap -------------------------------------------------------------------------


def test_hot_swap_under_concurrent_load(tmp_path: Path) -> None:
    paths = [tiny(tmp_path, seed) for seed in range(3)]
    host = ModelHost()
    host.activate(paths[0], "onnx", info(release=1))
    expected = []
    for path in paths:
        probe = ModelHost()
        probe.activate(path, "onnx", info())
        expected.append(probe.infer({"features": X})["probabilities"])
    stop = threading.Event()
    results: list[list[np.ndarray]] = [[] for _ in range(6)]
    failures: list[BaseException] = []

    def load(mine: list[np.ndarray]) -> None:
        try:
            while not stop.is_set():
                mine.append(host.infer({"features": X})["probabilities"])
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=load, args=(r,)) for r in results]
    for t in threads:
        t.start()
    for release, path in ((2, paths[1]), (3, paths[2])):
        time.sleep(0.15)
        host.activate(path, "onnx", info(release=release))
    time.sleep(0.15)
    stop.set()
    for t in threads:
        t.join(10)
    assert failures == []
    seen = set()
    for out in (o for r in results for o in r):
        matches = [i for i, want in enumerate(expected) if np.array_equal(out, want)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == {0, 1, 2}


def test_an_in_flight_call_finishes_on_its_model_which_is_then_released(tmp_path: Path) -> None:
    host = ModelHost()
    host.activate(tiny(tmp_path, 0), "onnx", info(release=1))
    old = host.infer({"features": X})["probabilities"]
    gate, started = threading.Event(), threading.Event()
    gated = _Gated(host.current().runtime, gate, started)
    host.current().runtime = gated  # type: ignore[assignment]
    released = weakref.ref(gated)
    del gated
    answer: list[np.ndarray] = []
    worker = threading.Thread(
        target=lambda: answer.append(host.infer({"features": X})["probabilities"])
    )
    worker.start()
    assert started.wait(10)
    host.activate(tiny(tmp_path, 1), "onnx", info(release=2))
    new = host.infer({"features": X})["probabilities"]
    assert not np.array_equal(new, old)
    assert released() is not None  # still in use by the call in flight
    gate.set()
    worker.join(10)
    np.testing.assert_array_equal(answer[0], old)
    assert released() is None


# -- statistics -------------------------------------------------------------------------


def test_stats_count_percentiles_and_reset() -> None:
    stats = ServingStats()
    for _ in range(90):
        stats.record(1_000_000)  # 1 ms
    for _ in range(10):
        stats.record(50_000_000)  # 50 ms
    stats.record_error()
    figures = stats.snapshot()
    assert figures.inferences == 100 and figures.errors == 1
    assert figures.p50_ms == pytest.approx(1.0, rel=0.1)
    assert figures.p95_ms == pytest.approx(50.0, rel=0.1)
    assert figures.p99_ms == pytest.approx(50.0, rel=0.1)
    assert figures.max_ms == 50.0
    assert sum(figures.histogram) == 100
    assert len(figures.histogram) == len(LATENCY_BUCKET_BOUNDS_NS) + 1
    assert figures.error_rate == pytest.approx(1 / 101)
    assert stats.snapshot(reset=True) == figures
    assert stats.snapshot().inferences == 0
    stats.record(10**15)  # beyond the last bucket
    assert stats.snapshot().histogram[-1] == 1
    stats.reset()
    assert stats.snapshot().p99_ms == 0.0


def test_stats_are_exact_under_threads() -> None:
    stats = ServingStats()

    def hammer() -> None:
        for i in range(20_000):
            stats.record(1_000 + i)
            if i % 100 == 0:
                stats.record_error()

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    figures = stats.snapshot()
    assert figures.inferences == 160_000 and figures.errors == 1_600
    assert sum(figures.histogram) == 160_000


def test_each_activation_starts_fresh_stats(host: ModelHost, tmp_path: Path) -> None:
    host.infer({"features": X})
    assert host.stats.snapshot().inferences == 1
    assert host.stats.snapshot().p50_ms > 0
    host.activate(tiny(tmp_path, 1), "onnx", info(release=2))
    assert host.stats.snapshot().inferences == 0


# -- TFLite -------------------------------------------------------------------------------


@pytest.mark.tflite
@needs_tflite
def test_tflite_model_serves_and_validates(committed: Any) -> None:
    host = ModelHost()
    host.activate(committed.tflite, "tflite", info("sensor", fmt="tflite"))
    served = host.info
    assert served is not None and served.format == "tflite"
    assert served.runtime in {"ai-edge-litert", "tflite-runtime"}
    features = committed.heldout[0][:32]
    proba = host.infer({"features": features})["probabilities"]
    labels = committed.heldout[1][:32]
    assert proba.shape == (32, 4) and float(np.mean(proba.argmax(axis=1) == labels)) > 0.7
    with pytest.raises(InputError, match="shape"):
        host.infer({"features": features[:, :5]})
    assert host.stats.snapshot().errors == 0


@pytest.mark.tflite
@needs_tflite
def test_tflite_hot_swap_under_concurrent_load(committed: Any) -> None:
    features = committed.heldout[0][:4]
    models = [committed.tflite, committed.tflite_int8_io]
    expected = []
    for path in models:
        probe = ModelHost()
        probe.activate(path, "tflite", info("sensor", fmt="tflite"))
        expected.append(probe.infer({"features": features})["probabilities"])
    assert not np.array_equal(*expected)
    host = ModelHost()
    host.activate(models[0], "tflite", info("sensor", fmt="tflite"))
    stop, failures, outputs = threading.Event(), [], []

    def load() -> None:
        try:
            while not stop.is_set():
                outputs.append(host.infer({"features": features})["probabilities"])
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for release, path in ((2, models[1]), (3, models[0])):
        time.sleep(0.1)
        host.activate(path, "tflite", info("sensor", release, "tflite"))
    time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(10)
    assert failures == []
    for out in outputs:
        assert sum(np.array_equal(out, want) for want in expected) == 1
