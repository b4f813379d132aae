"""The retraining job: its data mix, its decisions, and a local retrain-and-validate run.

The job against a real control plane (captures uploaded by a device, push,
release, canary rollout) is in ``tests/models/test_retrain_job.py``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.sensor import recipe
from models.sensor._retrain_api import Login, NoDataError, resolve_login
from models.sensor._retrain_check import (
    compare,
    model_devices,
    next_version,
    rollout_document,
    rollout_name,
)
from models.sensor._retrain_data import (
    MAX_REPEAT,
    MIN_HOLDOUT_ROWS,
    Capture,
    Evidence,
    Rows,
    combine,
    dataset_npz,
    load_capture,
    parse_captures,
)
from models.sensor.data import FEATURE_NAMES, Drift, generate

F = len(FEATURE_NAMES)


def capture_npz(x: Any, y: Any, time: Any | None = None) -> bytes:
    buffer = io.BytesIO()
    arrays = {"x": np.asarray(x), "y": np.asarray(y)}
    if time is not None:
        arrays["time"] = np.asarray(time)
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def rows(n: int, labelled: int, seed: int = 1, drift: Drift = recipe.DEMO_DRIFT) -> Rows:
    x, y = generate(n, seed=seed, drift=drift)
    y = y.copy()
    y[labelled:] = -1
    return Rows(x, y, np.arange(n, dtype=np.int64))


def original(n: int = 2000) -> tuple[Any, Any]:
    return generate(n, seed=3)


# -- the data mix -----------------------------------------------------------------------------


def test_combine_holds_out_labelled_rows_and_weights_recent_data() -> None:
    captured = rows(600, labelled=400)
    mix = combine(original(), np.zeros((10, F), np.float32), captured, recent_share=0.2, seed=5)
    held_x, held_y = mix.holdout
    assert len(held_y) == 120 and np.all(held_y >= 0)  # 30 % of the labelled rows
    assert mix.recent_rows == 280 and mix.pseudo_labelled == 0
    # 280 rows repeated to carry about 20 % of 2000 + 280 * repeat.
    assert mix.repeat == round(0.2 * 2000 / (0.8 * 280))
    assert len(mix.train_y) == 2000 + 280 * mix.repeat
    # No held-out row is trained on: every held-out row is absent from the training set.
    trained = {row.tobytes() for row in mix.train_x}
    assert not any(row.tobytes() in trained for row in held_x)
    # Calibration: the original rows plus captured ones (labelled or not).
    assert len(mix.calibration) == 10 + 600
    # Reference: every captured row; unlabelled rows exist, so no labels.
    assert mix.reference_x.shape == (600, F) and mix.reference_y is None
    again = combine(original(), np.zeros((10, F), np.float32), captured, recent_share=0.2, seed=5)
    np.testing.assert_array_equal(again.holdout[0], held_x)


def test_combine_caps_repeats_and_keeps_labels_when_all_are_known() -> None:
    captured = rows(100, labelled=100)
    mix = combine(original(20000), np.zeros((1, F), np.float32), captured, recent_share=0.9)
    assert mix.repeat == MAX_REPEAT
    assert mix.reference_y is not None and np.all(mix.reference_y >= 0)


def test_combine_refuses_too_few_labelled_rows() -> None:
    captured = rows(5000, labelled=2 * MIN_HOLDOUT_ROWS - 1)
    with pytest.raises(NoDataError, match="99 of 5000 captured rows are labelled"):
        combine(original(), np.zeros((1, F), np.float32), captured)
    with pytest.raises(ValueError, match="recent_share"):
        combine(original(), np.zeros((1, F), np.float32), rows(300, 300), recent_share=1.0)


def test_pseudo_labels_only_confident_unlabelled_rows() -> None:
    captured = rows(400, labelled=200)
    proba = np.full((400, 4), 0.25, np.float32)
    proba[:300] = [0.02, 0.95, 0.02, 0.01]  # confident about class 1 on rows 0..299
    mix = combine(
        original(), np.zeros((1, F), np.float32), captured,
        current_proba=proba, pseudo_threshold=0.9,
    )  # fmt: skip
    # Unlabelled rows are 200..399; of those, 200..299 are confident.
    assert mix.pseudo_labelled == 100
    assert mix.recent_rows == (200 - 60) + 100
    pseudo = mix.train_y[2000 : 2000 + mix.recent_rows][-100:]
    assert np.all(pseudo == 1)
    with pytest.raises(ValueError, match="probabilities"):
        combine(original(), np.zeros((1, F), np.float32), captured, pseudo_threshold=0.9)


# -- captures and evidence --------------------------------------------------------------------


def test_load_capture_drops_non_finite_rows_and_unknown_labels() -> None:
    x = np.ones((5, F), np.float32)
    x[1, 3] = np.nan
    x[2, 0] = np.inf
    loaded, dropped = load_capture(capture_npz(x, [0, 1, 2, 9, -1], [10, 11, 12, 13, 14]))
    assert dropped == 2 and loaded.n == 3
    np.testing.assert_array_equal(loaded.y, [0, -1, -1])  # label 9 is no class: unknown
    np.testing.assert_array_equal(loaded.time, [10, 13, 14])
    assert loaded.x.dtype == np.float32 and loaded.labelled == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not a zip", "not a capture"),
        (capture_npz(np.ones((3, 7)), [0, 0, 0]), "x must be numeric"),
        (capture_npz(np.ones((3, F)), [0.5, 1, 2]), "y must be integer"),
        (capture_npz(np.array([{"a": 1}], dtype=object), [0]), "not a capture"),
    ],
)
def test_load_capture_refuses_what_is_not_a_capture(body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_capture(body)


def test_capture_listing_in_either_shape() -> None:
    sha = "ab" * 32
    item = {"id": 7, "device_id": "d1", "release": 1, "window_start": 60, "rows": 5, "labelled": 2}
    for listing in ([{**item, "artifact_sha256": sha}], {"captures": [{**item, "sha256": sha}]}):
        assert parse_captures(listing) == [Capture("d1", 1, 7, "60", 5, 2, sha)]
    with pytest.raises(ValueError, match="sha256"):
        parse_captures([item])


def test_evidence_is_read_flat_or_nested_with_an_optional_simulated_drift() -> None:
    flat = {
        "model": "sensor", "release": 3, "cohort": "site=a",
        "window_start": "2026-01-01T00:00:00Z", "share_devices": 0.5,
    }  # fmt: skip
    evidence = Evidence.from_bytes(json.dumps(flat).encode())
    assert (evidence.model, evidence.release, evidence.cohort) == ("sensor", 3, "site=a")
    assert evidence.window_start is not None and evidence.window_start.year == 2026
    assert evidence.simulated_drift is None and len(evidence.sha256) == 64
    nested = {"evidence": {"model": "sensor", "simulated_drift": {"mean_shift": 1.0}}}
    drift = Evidence.from_bytes(json.dumps(nested).encode()).simulated_drift
    assert drift == Drift(mean_shift=1.0)
    for bad in (b"[1]", b"{", b'{"simulated_drift": {"offset": 1}}', b'{"release": "x"}'):
        with pytest.raises(NoDataError):
            Evidence.from_bytes(bad)


def test_login_comes_from_flags_env_or_the_fleetctl_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("EDGEFLEET_SERVER", "EDGEFLEET_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    config = tmp_path / "fleetctl.json"
    monkeypatch.setenv("EDGEFLEET_CLI_CONFIG", str(config))
    with pytest.raises(Exception, match="fleetctl login"):
        resolve_login()
    config.write_text(json.dumps({"server": "http://saved/", "token": "efo_saved"}))
    assert resolve_login() == Login("http://saved", "efo_saved")
    monkeypatch.setenv("JOB_TOKEN", "efo_job")
    login = resolve_login("http://flag", "JOB_TOKEN")
    assert login == Login("http://flag", "efo_job") and "efo_job" not in repr(login)
    with pytest.raises(Exception, match="NOPE"):
        resolve_login(None, "NOPE")


# -- decisions ---------------------------------------------------------------------------------


def _proba(labels: list[int], right: int) -> Any:
    """Probabilities that get the first ``right`` labels right and the rest wrong."""
    out = np.zeros((len(labels), 4))
    for i, label in enumerate(labels):
        out[i, label if i < right else (label + 1) % 4] = 1.0
    return out


def test_compare_needs_a_drifted_gain_and_at_most_one_point_lost() -> None:
    y = np.array([0, 1, 2, 3] * 50)  # 200 rows
    current = (_proba(list(y), 190), _proba(list(y), 120))
    better = compare(y, y, current, (_proba(list(y), 188), _proba(list(y), 170)))
    assert better.accepted and better.reasons == ()
    assert better.new_drifted == 0.85 and better.current_original == 0.95
    forgets = compare(y, y, current, (_proba(list(y), 187), _proba(list(y), 170)))
    assert not forgets.accepted and "loses 0.0150" in forgets.reasons[0]
    no_gain = compare(y, y, current, (_proba(list(y), 190), _proba(list(y), 120)))
    assert not no_gain.accepted and "not better" in no_gain.reasons[0]
    assert [r[0] for r in better.rows()] == ["original (200 rows)", "drifted (200 rows)"]


def test_next_version_bumps_the_newest_free_semver() -> None:
    assert next_version([]) == "1.0.0"
    assert next_version(["1.0.0", "1.0.0-float", "0.9.0", "nightly"]) == "1.1.0"
    assert next_version(["1.0.0", "1.2.3"], "patch") == "1.2.4"
    assert next_version(["1.0.0", "1.1.0-float"]) == "1.2.0"  # a parent left by a failed run
    assert next_version(["2.0.0", "10.0.0"]) == "10.1.0"  # numeric, not text, order


def test_rollout_document_is_a_canary_then_everyone() -> None:
    doc = rollout_document("sensor", "1.1.0", canary_percent=10, approval=True, selector="site=a")
    assert doc["metadata"]["name"] == "sensor-1.1.0-retrain"
    assert doc["spec"]["waves"] == [
        {"percent": 10, "min_devices": 1},
        {"percent": 100, "approval": True},
    ]
    assert doc["spec"]["selector"] == "site=a"
    plain = rollout_document("sensor", "1.1.0", canary_percent=5, approval=False, selector=None)
    assert "selector" not in plain["spec"] and plain["spec"]["waves"][1] == {"percent": 100}
    assert rollout_name("Motor_Sensor", "2.0.0+b1") == "motor_sensor-2.0.0-b1-retrain"
    with pytest.raises(ValueError):
        rollout_document("sensor", "1", canary_percent=100, approval=True, selector=None)


def test_model_devices_tells_our_devices_from_others() -> None:
    devices: list[dict[str, Any]] = [
        {"id": "a", "current": {"model": "sensor"}},
        {"id": "b", "current": None, "target": None},
        {"id": "c", "current": {"model": "camera"}},
    ]
    assert model_devices(devices, "sensor") == (2, ["c"])


# -- retrain and validate locally, through the real runtimes -----------------------------------


def test_retrained_model_beats_the_current_one_on_drifted_captures(tmp_path: Path) -> None:
    """Captures as device .npz files -> mix -> train -> ONNX -> int8 -> judged in onnxruntime."""
    pytest.importorskip("onnxruntime")
    from fleetcore.runtimes import load_model
    from models.sensor.evaluate import predict_proba
    from models.sensor.export import export_onnx
    from models.sensor.quantize import quantize_int8_static
    from models.sensor.train import TrainConfig, train

    samples, seed = 4000, recipe.DEFAULT_SEED
    splits = recipe.make_splits(samples, seed)
    current, _ = recipe.fit(splits, seed)
    current_path = quantize_int8_static(
        export_onnx(current, tmp_path / "current.onnx"), tmp_path / "current-int8.onnx",
        splits.calibration,
    )  # fmt: skip
    parts = []
    for device in range(3):  # three devices, each with half of its rows labelled
        x, y = generate(500, seed=100 + device, drift=recipe.DEMO_DRIFT)
        y = np.where(np.arange(500) % 2 == 0, y, -1)
        loaded, dropped = load_capture(capture_npz(x, y, np.zeros(500, np.int64)))
        assert dropped == 0
        parts.append(loaded)
    captured = Rows.concat(parts)
    mix = combine(splits.train, splits.calibration, captured, seed=seed)
    model, _ = train(mix.train_x, mix.train_y, n_classes=4, config=TrainConfig(seed=seed))
    new_path = quantize_int8_static(
        export_onnx(model, tmp_path / "new.onnx"), tmp_path / "new-int8.onnx", mix.calibration
    )
    holdouts = (splits.heldout[0], mix.holdout[0])
    old_rt, new_rt = load_model(current_path), load_model(new_path)
    result = compare(
        splits.heldout[1],
        mix.holdout[1],
        (predict_proba(old_rt, holdouts[0]), predict_proba(old_rt, holdouts[1])),
        (predict_proba(new_rt, holdouts[0]), predict_proba(new_rt, holdouts[1])),
    )
    assert result.accepted, result.reasons
    assert result.new_drifted > result.current_drifted + 0.1
    # The reference data it would push is what the registry reads: x, names, no y here.
    with np.load(io.BytesIO(dataset_npz(mix.reference_x, mix.reference_y))) as npz:
        assert sorted(npz.files) == ["class_names", "feature_names", "x"]
        assert npz["x"].shape == (1500, F)


def test_main_reports_bad_input_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.sensor import retrain

    monkeypatch.delenv(retrain.EVIDENCE_ENV, raising=False)
    assert retrain.main(["--out", str(tmp_path)]) == 2
    assert (
        capsys.readouterr().err == "error: name the model: --model NAME (or pass drift evidence)\n"
    )
    evidence = tmp_path / "evidence.json"
    evidence.write_text(json.dumps({"model": "camera"}))
    monkeypatch.setenv(retrain.EVIDENCE_ENV, str(evidence))
    assert retrain.main(["--model", "sensor"]) == 2
    assert "the evidence is about camera, not sensor" in capsys.readouterr().err
    monkeypatch.setenv("EDGEFLEET_CLI_CONFIG", str(tmp_path / "none.json"))
    for var in ("EDGEFLEET_SERVER", "EDGEFLEET_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv(retrain.EVIDENCE_ENV)
    assert retrain.main(["--model", "sensor", "--canary-percent", "0"]) == 2
    assert retrain.main(["--model", "sensor"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: --canary-percent must be between 0 and 100"
    assert err[1].startswith("error: no control plane")
