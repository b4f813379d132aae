"""Dataset .npz files: round trips, hostile and malformed uploads, the row cap."""

from __future__ import annotations

import io
import pickle
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from control_plane.errors import InvalidInputError
from control_plane.registry import Dataset, load_dataset, save_dataset
from models.sensor.data import CLASS_NAMES, FEATURE_NAMES


def _npz(path: Path, *, compressed: bool = False, **arrays: Any) -> Path:
    saver = np.savez_compressed if compressed else np.savez
    with path.open("wb") as handle:
        saver(handle, **arrays)
    return path


def _good(rows: int = 50, features: int = 3, classes: int = 3) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {
        "x": rng.standard_normal((rows, features)).astype(np.float32),
        "y": rng.integers(0, classes, rows).astype(np.int64),
        "feature_names": np.array([f"f{i}" for i in range(features)]),
        "class_names": np.array([f"c{i}" for i in range(classes)]),
    }


# -- round trips ---------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    arrays = _good()
    dataset = Dataset(
        x=arrays["x"],
        y=arrays["y"],
        feature_names=("a", "b", "c"),
        class_names=("no", "yes", "maybe"),
    )
    path = save_dataset(tmp_path / "d.npz", dataset)
    loaded = load_dataset(path)
    np.testing.assert_array_equal(loaded.x, dataset.x)
    assert loaded.y is not None and dataset.y is not None
    np.testing.assert_array_equal(loaded.y, dataset.y)
    assert loaded.feature_names == ("a", "b", "c")
    assert loaded.class_names == ("no", "yes", "maybe")
    assert loaded.x.dtype == np.float32 and loaded.y.dtype == np.int64
    assert loaded.rows_in_file is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]  # no temp files left


def test_x_only_and_other_numeric_dtypes_are_read_as_float32(tmp_path: Path) -> None:
    x = np.arange(12, dtype=">i2").reshape(4, 3)  # big-endian int16
    loaded = load_dataset(_npz(tmp_path / "d.npz", x=x, y=np.array([0, 1, 1, 0], np.uint8)))
    assert loaded.x.dtype == np.float32 and loaded.x.flags.c_contiguous
    np.testing.assert_array_equal(loaded.x, x.astype(np.float32))
    assert loaded.y is not None and loaded.y.dtype == np.int64
    assert loaded.feature_names is None and loaded.class_names is None
    assert not loaded.x.flags.writeable and not loaded.y.flags.writeable


def test_compressed_and_fortran_ordered_arrays_load(tmp_path: Path) -> None:
    arrays = _good(rows=40)
    fortran = np.asfortranarray(arrays["x"])
    assert fortran.flags.f_contiguous and not fortran.flags.c_contiguous
    loaded = load_dataset(_npz(tmp_path / "d.npz", compressed=True, **{**arrays, "x": fortran}))
    np.testing.assert_array_equal(loaded.x, arrays["x"])


def test_pipeline_export_loads(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    import json

    from models.sensor import pipeline

    assert pipeline.main(["--out", str(tmp_path), "--samples", "400", "--export-data"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["datasets"] == {
        "calibration": "calibration.npz",
        "heldout": "eval.npz",
        "reference": "reference.npz",
    }
    calibration = load_dataset(tmp_path / "calibration.npz")
    assert calibration.y is None and calibration.n_features == len(FEATURE_NAMES)
    evaluation = load_dataset(tmp_path / "eval.npz")
    assert evaluation.n_rows == 100 and evaluation.y is not None
    reference = load_dataset(tmp_path / "reference.npz")
    assert reference.feature_names == FEATURE_NAMES and reference.class_names == CLASS_NAMES
    assert reference.n_rows == summary["splits"]["reference"]


def test_pipeline_does_not_export_by_default(sensor_build: Any) -> None:
    assert {p.name for p in sensor_build.out.glob("*.npz")} == {"sensor-weights.npz"}
    assert "datasets" not in sensor_build.summary


# -- the row cap ------------------------------------------------------------------


@pytest.mark.parametrize("order", ["C", "F"])
def test_row_cap_reads_the_first_rows_only(tmp_path: Path, order: str) -> None:
    arrays = _good(rows=5000)
    x = np.asarray(arrays["x"], order=order)  # type: ignore[call-overload]
    path = _npz(tmp_path / "d.npz", **{**arrays, "x": x})
    loaded = load_dataset(path, max_rows=100)
    assert loaded.n_rows == 100 and loaded.rows_in_file == 5000
    np.testing.assert_array_equal(loaded.x, arrays["x"][:100])
    assert loaded.y is not None
    np.testing.assert_array_equal(loaded.y, arrays["y"][:100])
    capped = load_dataset(path, max_elements=30)  # 3 features: 10 rows
    assert capped.n_rows == 10


def test_a_compressed_bomb_is_not_inflated(tmp_path: Path) -> None:
    """64 MB of zeros compress to well under 1 MB; reading 10 rows stays small."""
    path = _npz(tmp_path / "bomb.npz", compressed=True, x=np.zeros((4_000_000, 4), np.float32))
    assert path.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        loaded = load_dataset(path, max_rows=10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert loaded.n_rows == 10 and loaded.rows_in_file == 4_000_000
    assert peak < 4_000_000


# -- hostile and malformed uploads ---------------------------------------------------


class _Tripwire:
    """Unpickling this touches a file: proof that loading never unpickles."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> Any:
        return (self.target.touch, ())


def test_pickled_object_arrays_are_refused_without_unpickling(tmp_path: Path) -> None:
    sentinel = tmp_path / "unpickled"
    objects = np.empty((2, 2), dtype=object)
    objects[:] = _Tripwire(sentinel)
    path = _npz(tmp_path / "evil.npz", x=objects)
    with pytest.raises(InvalidInputError, match="Python objects"):
        load_dataset(path)
    assert not sentinel.exists()
    # The same payload really does fire when unpickled, so the check above means something.
    pickle.loads(pickle.dumps(_Tripwire(sentinel)))
    assert sentinel.exists()


def test_pickled_labels_and_structured_arrays_are_refused(tmp_path: Path) -> None:
    x = np.ones((2, 2), np.float32)
    with pytest.raises(InvalidInputError, match="Python objects"):
        load_dataset(_npz(tmp_path / "a.npz", x=x, y=np.array([0, "1"], dtype=object)))
    records = np.zeros(2, dtype=[("a", "f4"), ("b", "f4")])
    with pytest.raises(InvalidInputError, match="records"):
        load_dataset(_npz(tmp_path / "b.npz", x=records))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_refused(tmp_path: Path, bad: float) -> None:
    x = np.ones((4, 2), np.float32)
    x[2, 1] = bad
    with pytest.raises(InvalidInputError, match="1 NaN or infinite"):
        load_dataset(_npz(tmp_path / "d.npz", x=x))


def test_float64_values_that_overflow_float32_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        load_dataset(_npz(tmp_path / "d.npz", x=np.full((2, 2), 1e300)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"x": np.ones(5, np.float32)}, "2-D"),
        ({"x": np.ones((2, 2, 2), np.float32)}, "2-D"),
        ({"x": np.ones((0, 3), np.float32), "y": np.zeros(0, np.int64)}, r"rows >= 1"),
        ({"x": np.ones((4, 3), np.complex64)}, "real numbers"),
        ({"x": np.array([["a", "b", "c"]])}, "real numbers"),
        ({"y": np.zeros(49, np.int64)}, "y has 49 entries but x has 50 rows"),
        ({"y": np.zeros((50, 1), np.int64)}, "1-D"),
        ({"y": np.full(50, 3, np.int64)}, r"labels range 3\.\.3; must be 0\.\.2"),
        ({"y": np.full(50, -1, np.int64)}, "labels range"),
        ({"y": np.zeros(50, np.float32)}, "integer class labels"),
        ({"feature_names": np.array(["a", "b"])}, "2 feature_names for 3 features"),
        ({"feature_names": np.array(["a", "a", "b"])}, "distinct"),
        ({"feature_names": np.array([b"a", b"b", b"c"])}, "unicode strings"),
        ({"class_names": np.array(["only"])}, "at least two classes"),
        ({"class_names": np.array(["a", "", "c"])}, "non-empty"),
    ],
)
def test_malformed_arrays_are_refused(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    path = _npz(tmp_path / "d.npz", **{**_good(), **change})
    with pytest.raises(InvalidInputError, match=message) as info:
        load_dataset(path)
    assert "\n" not in info.value.message and info.value.message.startswith("d.npz")


def test_unknown_or_missing_members_are_refused(tmp_path: Path) -> None:
    arrays = _good()
    labels_misnamed = {"x": arrays["x"], "labels": arrays["y"]}
    with pytest.raises(InvalidInputError, match=r"'labels\.npy'; a dataset holds only x, y"):
        load_dataset(_npz(tmp_path / "a.npz", **labels_misnamed))
    with pytest.raises(InvalidInputError, match="no 'x' array"):
        load_dataset(_npz(tmp_path / "b.npz", y=arrays["y"]))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not an .npz archive"),
        (b"feature,label\n1.0,2\n", "not an .npz archive"),
        (b"\x93NUMPY\x01\x00" + b"garbage" * 10, "not an .npz archive"),
    ],
)
def test_files_that_are_not_npz_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "upload.npz"
    path.write_bytes(content)
    with pytest.raises(InvalidInputError, match=message):
        load_dataset(path)


def test_truncated_and_corrupt_archives_are_refused(tmp_path: Path) -> None:
    data = _npz(tmp_path / "good.npz", **_good(rows=2000)).read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInputError):
        load_dataset(truncated)
    # A valid zip whose x member is not an .npy file.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", b"not an npy header at all")
    bogus = tmp_path / "bogus.npz"
    bogus.write_bytes(buffer.getvalue())
    with pytest.raises(InvalidInputError, match=r"bogus\.npz is malformed"):
        load_dataset(bogus)
    # An npy header that promises more data than the member holds.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (1000, 3)}
    )
    short = io.BytesIO()
    with zipfile.ZipFile(short, "w") as archive:
        archive.writestr("x.npy", header.getvalue() + b"\x00" * 12)
    (tmp_path / "short.npz").write_bytes(short.getvalue())
    with pytest.raises(InvalidInputError, match=r"ends \d+ bytes early"):
        load_dataset(tmp_path / "short.npz")


def test_missing_file_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"cannot read absent\.npz"):
        load_dataset(tmp_path / "absent.npz")


def test_dataset_checks_apply_to_in_memory_construction() -> None:
    with pytest.raises(InvalidInputError, match="NaN"):
        Dataset(x=np.array([[np.nan]], np.float32))
    with pytest.raises(InvalidInputError, match=r"must be 0\.\.1"):
        Dataset(x=np.ones((2, 1), np.float32), y=np.array([0, 2]), class_names=("a", "b"))
    # Other numeric dtypes are converted on construction, as on load.
    dataset = Dataset(x=np.array([[1, 2], [3, 4]], np.int32), y=np.array([1, 0], np.uint8))
    assert dataset.x.dtype == np.float32 and dataset.n_features == 2 and dataset.labelled
