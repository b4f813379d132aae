"""agent.local.LocalModel: following the agent's active-model pointer in-process."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.local import LocalModel
from agent.serving import ModelHost, ModelInfo
from agent.serving_errors import NoModelError
from agent.slots import ACTIVE_POINTER, Slot, blob_path, write_active
from fleetcore.errors import RuntimeLoadError
from fleetcore.runtimes import available_runtimes
from models.tiny import FEATURES, tiny_onnx_bytes

X = np.linspace(-1.0, 1.0, 2 * FEATURES, dtype=np.float32).reshape(2, FEATURES)


def install(data_dir: Path, content: bytes, release: int, fmt: str = "onnx") -> Slot:
    """Put ``content`` in the store as the agent does; return its slot (not yet active)."""
    sha = hashlib.sha256(content).hexdigest()
    path = blob_path(data_dir, sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return Slot(model="tiny", release=release, sha256=sha, format=fmt, path=path)


def outputs_of(content: bytes, tmp_path: Path) -> np.ndarray:
    path = tmp_path / f"probe-{hashlib.sha256(content).hexdigest()[:8]}.onnx"
    path.write_bytes(content)
    probe = ModelHost()
    probe.activate(path, "onnx", ModelInfo("probe", 1, "0" * 64, "onnx"))
    return probe.infer({"features": X})["probabilities"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_follows_the_pointer_through_switches(data_dir: Path, tmp_path: Path) -> None:
    local = LocalModel(data_dir)
    assert local.info is None
    with pytest.raises(NoModelError):
        local.infer({"features": X})
    models = [tiny_onnx_bytes(seed) for seed in range(2)]
    slots = [install(data_dir, content, release) for release, content in enumerate(models, 1)]
    write_active(data_dir, slots[0])
    np.testing.assert_array_equal(
        local.infer({"features": X})["probabilities"], outputs_of(models[0], tmp_path)
    )
    assert local.info is not None and local.info.sha256 == slots[0].sha256
    assert local.info.runtime == "onnxruntime"
    write_active(data_dir, slots[1])
    np.testing.assert_array_equal(
        local.infer({"features": X})["probabilities"], outputs_of(models[1], tmp_path)
    )
    assert local.info.release == 2
    write_active(data_dir, None)
    with pytest.raises(NoModelError):
        local.infer({"features": X})


def test_loads_the_active_model_at_start(data_dir: Path) -> None:
    write_active(data_dir, install(data_dir, tiny_onnx_bytes(3), 7))
    local = LocalModel(str(data_dir))
    assert local.info is not None and local.info.release == 7
    assert local.infer({"features": X})["probabilities"].shape == (2, 3)
    assert local.stats.snapshot().inferences == 1


def test_an_unloadable_model_at_start_is_an_error(data_dir: Path) -> None:
    write_active(data_dir, install(data_dir, b"not a model at all", 1))
    with pytest.raises(RuntimeLoadError):
        LocalModel(data_dir)
    (data_dir / ACTIVE_POINTER).write_text("{broken")
    with pytest.raises(RuntimeLoadError, match="pointer"):
        LocalModel(data_dir)


def test_a_bad_switch_keeps_the_old_model_serving(data_dir: Path, tmp_path: Path) -> None:
    good = tiny_onnx_bytes(0)
    write_active(data_dir, install(data_dir, good, 1))
    local = LocalModel(data_dir)
    want = outputs_of(good, tmp_path)
    write_active(data_dir, install(data_dir, b"corrupt bytes", 2))
    np.testing.assert_array_equal(local.infer({"features": X})["probabilities"], want)
    pointer = data_dir / ACTIVE_POINTER
    pointer.write_text("{torn")  # never happens with atomic_write; must not break serving
    np.testing.assert_array_equal(local.infer({"features": X})["probabilities"], want)
    fixed = tiny_onnx_bytes(1)
    write_active(data_dir, install(data_dir, fixed, 3))
    np.testing.assert_array_equal(
        local.infer({"features": X})["probabilities"], outputs_of(fixed, tmp_path)
    )


def test_the_pointer_is_reread_periodically(data_dir: Path, tmp_path: Path) -> None:
    first, second = (install(data_dir, tiny_onnx_bytes(s), s + 1) for s in range(2))
    write_active(data_dir, first)
    local = LocalModel(data_dir, recheck_s=0.0)
    pointer = data_dir / ACTIVE_POINTER
    before = pointer.stat()
    write_active(data_dir, second)
    # Make the stat look unchanged: only the periodic re-read can notice the switch.
    local._seen = (pointer.stat().st_ino, pointer.stat().st_mtime_ns, pointer.stat().st_size)
    assert before.st_size == pointer.stat().st_size
    assert local.info is not None and local.info.release == 2


def test_switches_under_concurrent_calls_never_fail(data_dir: Path, tmp_path: Path) -> None:
    contents = [tiny_onnx_bytes(seed) for seed in range(3)]
    slots = [install(data_dir, c, r) for r, c in enumerate(contents, 1)]
    expected = [outputs_of(c, tmp_path) for c in contents]
    write_active(data_dir, slots[0])
    local = LocalModel(data_dir)
    stop, failures, outputs = threading.Event(), [], []

    def load() -> None:
        try:
            while not stop.is_set():
                outputs.append(local.infer({"features": X})["probabilities"])
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for slot in (slots[1], slots[2], slots[0]):
        time.sleep(0.1)
        write_active(data_dir, slot)
    time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(10)
    assert failures == []
    seen = {next(i for i, e in enumerate(expected) if np.array_equal(o, e)) for o in outputs}
    assert seen == {0, 1, 2}


@pytest.mark.tflite
@pytest.mark.skipif(
    not set(available_runtimes()) & {"ai-edge-litert", "tflite-runtime"},
    reason="no TFLite interpreter",
)
def test_tflite_slot(data_dir: Path, committed: Any) -> None:
    slot = install(data_dir, committed.tflite.read_bytes(), 1, fmt="tflite")
    write_active(data_dir, slot)
    local = LocalModel(data_dir)
    assert local.info is not None and local.info.format == "tflite"
    features = committed.heldout[0][:16]
    proba = local.infer({"features": features})["probabilities"]
    assert proba.shape == (16, 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=0.02)
