"""The sensor model pipeline end to end, its data generator and its drift knobs."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pytest

from fleetcore.drift import DriftReference, bin_counts_matrix, quantile_edges
from models.sensor import recipe
from models.sensor.data import (
    CLASS_NAMES,
    DRIFTED_FEATURES,
    FEATURE_NAMES,
    NOMINAL_STD,
    Drift,
    generate,
)
from models.sensor.train import MLP, TrainConfig, train

# -- the pipeline ------------------------------------------------------------


def test_pipeline_writes_every_artifact(sensor_build: Any) -> None:
    names = {p.name for p in sensor_build.out.iterdir()}
    assert {
        "sensor-weights.npz",
        "sensor-float.onnx",
        "sensor-int8-static.onnx",
        "sensor-int8-dynamic.onnx",
        "drift-reference.json",
        "summary.json",
    } <= names
    on_disk = json.loads((sensor_build.out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(sensor_build.summary))
    assert on_disk["samples"] == 4000 and on_disk["splits"]["heldout"] == 1000


def test_pipeline_prints_its_steps_and_the_table(sensor_build: Any) -> None:
    text = sensor_build.console_text
    for step in ("[1/7] data", "[2/7] train", "[4/7] quantize", "[6/7] drift", "[7/7] summary"):
        assert step in text
    assert sensor_build.summary["drift_reference"]["sha256"] in text
    for variant in ("float", "int8-static", "int8-dynamic"):
        assert variant in text


def test_int8_accuracy_is_within_a_few_points_of_float(sensor_build: Any) -> None:
    float_result = sensor_build.variant("float")
    assert float_result["agreement"] == 1.0
    assert float_result["accuracy"] > 0.85
    for name in ("int8-static", "int8-dynamic"):
        result = sensor_build.variant(name)
        assert result["accuracy"] >= float_result["accuracy"] - 0.03
        assert result["agreement"] >= 0.96
        assert result["size_bytes"] < float_result["size_bytes"]
        assert result["latency_ms_p50"] > 0


def test_drift_costs_accuracy(sensor_build: Any) -> None:
    for variant in sensor_build.summary["variants"]:
        assert variant["drifted_accuracy"] < variant["accuracy"] - 0.1


def test_drift_reference_is_valid_and_matches_the_summary(sensor_build: Any) -> None:
    data = (sensor_build.out / "drift-reference.json").read_bytes()
    reference = DriftReference.from_bytes(data)
    assert reference.digest() == sensor_build.summary["drift_reference"]["sha256"]
    assert reference.feature_names == FEATURE_NAMES
    assert reference.class_names == CLASS_NAMES
    assert reference.n == sensor_build.summary["splits"]["reference"]
    assert reference.accuracy is not None and reference.accuracy.accuracy() > 0.85
    psi = sensor_build.summary["drifted_psi"]
    assert max(psi[name] for name in DRIFTED_FEATURES) > 0.5


def test_pipeline_exits_non_zero_with_one_line(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnx")
    from models.sensor import pipeline

    assert pipeline.main(["--out", str(tmp_path), "--samples", "10"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


# -- determinism and the committed artifacts -----------------------------------


def test_training_is_deterministic() -> None:
    X, y = generate(1500, seed=11)
    config = TrainConfig(epochs=3, seed=5)
    first, _ = train(X, y, n_classes=4, config=config)
    second, _ = train(X, y, n_classes=4, config=config)
    assert first.digest() == second.digest()
    other, _ = train(X, y, n_classes=4, config=TrainConfig(epochs=3, seed=6))
    assert other.digest() != first.digest()


def test_weights_survive_save_and_load(tmp_path: Any) -> None:
    X, y = generate(500, seed=1)
    model, _ = train(X, y, n_classes=4, config=TrainConfig(epochs=1))
    model.save(tmp_path / "w.npz")
    loaded = MLP.load(tmp_path / "w.npz")
    assert loaded.digest() == model.digest()
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_committed_artifacts_match_the_recipe(committed: Any) -> None:
    """The default recipe retrains exactly the weights the TFLite model was built from."""
    provenance = committed.provenance
    assert committed.float_model.digest() == provenance["weights"]["sha256"]
    assert provenance["recipe"] == {
        "samples": recipe.DEFAULT_SAMPLES,
        "seed": recipe.DEFAULT_SEED,
        "heldout_samples": recipe.DEFAULT_SAMPLES // 4,
    }
    model, _ = recipe.fit(recipe.make_splits())
    assert model.digest() == provenance["weights"]["sha256"]
    for path in (committed.tflite, committed.tflite_int8_io):
        entry = provenance["files"][path.name]
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert len(data) == entry["bytes"] < 16_000
        assert entry["accuracy"] >= provenance["float_accuracy"] - 0.02


# -- the generator and its drift knobs -----------------------------------------


def test_generator_shape_types_and_seeding() -> None:
    X, y = generate(3000, seed=3)
    assert X.shape == (3000, len(FEATURE_NAMES)) and X.dtype == np.float32
    assert y.shape == (3000,) and y.dtype == np.int64
    assert len(FEATURE_NAMES) == 20 and len(CLASS_NAMES) == 4
    assert set(np.unique(y)) == {0, 1, 2, 3}
    assert np.all(np.isfinite(X))
    again, _ = generate(3000, seed=3)
    np.testing.assert_array_equal(X, again)
    assert not np.array_equal(X, generate(3000, seed=4)[0])


@pytest.mark.parametrize("bad", [{"scale": 0.0}, {"new_regime": 1.5}, {"mean_shift": float("nan")}])
def test_drift_knobs_are_validated(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Drift(**bad)


def _col(name: str) -> int:
    return FEATURE_NAMES.index(name)


def test_mean_shift_moves_the_documented_features_by_their_std() -> None:
    base, _ = generate(20_000, seed=21)
    shifted, _ = generate(20_000, seed=21, drift=Drift(mean_shift=1.5))
    for name in FEATURE_NAMES:
        j = _col(name)
        moved = (shifted[:, j].mean() - base[:, j].mean()) / NOMINAL_STD.get(name, 1.0)
        expected = 1.5 if name in DRIFTED_FEATURES else 0.0
        assert moved == pytest.approx(expected, abs=1e-3)


def test_scale_widens_the_documented_features() -> None:
    base, _ = generate(20_000, seed=22)
    wide, _ = generate(20_000, seed=22, drift=Drift(scale=1.5))
    for name in DRIFTED_FEATURES:
        assert wide[:, _col(name)].std() / base[:, _col(name)].std() == pytest.approx(1.5, rel=1e-3)
    untouched = _col("speed_rpm")
    assert wide[:, untouched].std() == pytest.approx(base[:, untouched].std())


def test_new_regime_shows_up_in_the_reference_bins() -> None:
    """What a device would report: mass moves out of the reference bins."""
    ref, _ = generate(5000, seed=23)
    same, _ = generate(5000, seed=24)
    overload, _ = generate(5000, seed=24, drift=Drift(new_regime=0.5))
    edges = np.array([quantile_edges(ref[:, j]) for j in range(ref.shape[1])])
    torque, rpm = _col("torque_nm"), _col("speed_rpm")
    same_counts = bin_counts_matrix(same, edges)
    drift_counts = bin_counts_matrix(overload, edges)
    # Undrifted data stays (almost) in range; overload pushes torque above the
    # reference maximum and speed below its minimum.
    assert same_counts[torque, -1] < 10 and same_counts[rpm, 0] < 10
    assert drift_counts[torque, -1] > 1000
    assert drift_counts[rpm, 0] > 1000
    assert overload[:, torque].mean() > same[:, torque].mean() + 10
