"""Drift reference: binning, moments, the format and its validation."""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fleetcore import canonical
from fleetcore.drift import (
    FEATURE_COUNTS,
    FEATURE_EDGES,
    FORMAT,
    OUTPUT_BINS,
    AccuracyTable,
    DriftReference,
    bin_counts,
    bin_counts_matrix,
    build_reference,
    output_histograms,
    output_statistics,
    quantile_edges,
)
from fleetcore.errors import MetadataError
from fleetcore.stats import Moments

CLASSES = ("a", "b", "c")
FEATURES = ("f0", "f1", "f2", "f3")


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def _data(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.column_stack(
        [
            rng.normal(10.0, 2.0, n),
            rng.exponential(1.0, n),
            rng.integers(0, 3, n).astype(float),  # discrete: heavy ties
            np.full(n, 4.25),  # constant
        ]
    ).astype(np.float32)
    labels = rng.integers(0, len(CLASSES), n)
    logits = rng.normal(0.0, 1.0, (n, len(CLASSES)))
    logits[np.arange(n), labels] += 2.0  # mostly right, not always
    return X, _softmax(logits).astype(np.float32), labels


@pytest.fixture(scope="module")
def reference() -> DriftReference:
    X, P, y = _data()
    return build_reference(X, P, y, feature_names=FEATURES, class_names=CLASSES)


# -- building ----------------------------------------------------------------


def test_reference_layout_and_counts(reference: DriftReference) -> None:
    X, P, y = _data()
    assert reference.format == FORMAT == "edgefleet.drift-reference/1"
    assert reference.n == 2000
    assert reference.feature_names == FEATURES
    assert reference.class_names == CLASSES
    for j, feature in enumerate(reference.features):
        assert len(feature.edges) == FEATURE_EDGES == 17
        assert len(feature.counts) == FEATURE_COUNTS == 18
        assert all(b > a for a, b in itertools.pairwise(feature.edges))
        assert sum(feature.counts) == 2000
        assert feature.counts[0] == feature.counts[-1] == 0  # reference is in range
        assert feature.edges[0] == float(X[:, j].min())
        assert feature.moments.n == 2000
        assert feature.moments.mean == pytest.approx(float(X[:, j].astype(np.float64).mean()))
    predicted = P.argmax(axis=1)
    assert reference.output.class_counts == tuple(np.bincount(predicted, minlength=3))
    for hist in reference.output.histograms().values():
        assert len(hist.counts) == OUTPUT_BINS and sum(hist.counts) == 2000
    assert reference.accuracy is not None
    assert sum(reference.accuracy.correct) == int(np.sum(predicted == y))
    assert reference.accuracy.count == reference.output.max_probability.counts


def test_continuous_feature_bins_have_equal_mass(reference: DriftReference) -> None:
    inner = reference.features[0].counts[1:-1]
    assert max(inner) - min(inner) <= 1
    assert sum(inner) == 2000


def test_ties_still_give_strictly_increasing_usable_edges(reference: DriftReference) -> None:
    discrete, constant = reference.features[2], reference.features[3]
    for feature in (discrete, constant):
        assert all(b > a for a, b in itertools.pairwise(feature.edges))
    # All mass of a constant feature sits in the first bin.
    assert constant.counts[1] == 2000
    assert constant.edges[0] == 4.25
    # Three values -> three non-empty bins; the others are empty.
    assert sum(1 for c in discrete.counts if c) == 3
    # New data on the same values bins the same way.
    counts = bin_counts(np.array([0.0, 1.0, 2.0, 4.0, -1.0]), discrete.edges)
    assert counts[0] == 1 and counts[-1] == 1 and counts.sum() == 5


def test_quantile_edges_of_a_constant_and_of_too_little_data() -> None:
    edges = quantile_edges(np.zeros(5))
    assert edges[0] == 0.0 and np.all(np.diff(edges) > 0)
    assert quantile_edges(np.array([3.0])).size == 17
    with pytest.raises(MetadataError):
        quantile_edges(np.array([np.nan, np.inf]))


def test_bin_counts_boundaries_and_non_finite_values() -> None:
    edges = [0.0, 1.0, 2.0]
    values = [-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, np.nan, np.inf, -np.inf]
    # below | [0, 1) | [1, 2] | above ; non-finite values are not binned
    assert bin_counts(values, edges).tolist() == [1, 2, 2, 1]
    with pytest.raises(MetadataError):
        bin_counts(values, [0.0, 0.0, 1.0])


def test_output_statistics_extremes() -> None:
    uniform = np.full((1, 4), 0.25)
    onehot = np.array([[0.0, 1.0, 0.0, 0.0]])
    s = output_statistics(np.vstack([uniform, onehot]))
    assert s["max_probability"].tolist() == [0.25, 1.0]
    assert s["margin"].tolist() == [0.0, 1.0]
    assert s["entropy"][0] == pytest.approx(math.log(4))
    assert s["entropy"][1] == 0.0
    h = output_histograms(np.vstack([uniform, onehot]))
    assert h["entropy"][-1] == 1 and h["entropy"][0] == 1  # ln K clips into the last bin
    assert h["max_probability"][0] == 1 and h["max_probability"][-1] == 1


def test_estimate_accuracy_on_the_reference_itself(reference: DriftReference) -> None:
    assert reference.accuracy is not None
    estimate = reference.estimate_accuracy(reference.output.max_probability.counts)
    assert estimate == pytest.approx(reference.accuracy.accuracy())
    assert reference.estimate_accuracy([0] * OUTPUT_BINS) is None


def test_accuracy_estimate_weights_bins_and_falls_back_to_confidence() -> None:
    count = [0] * OUTPUT_BINS
    correct = [0] * OUTPUT_BINS
    count[10], correct[10] = 100, 60  # reference: 60 % right in bin 10
    table = AccuracyTable(count=tuple(count), correct=tuple(correct))
    mids = [0.025 + 0.05 * i for i in range(OUTPUT_BINS)]
    live = [0] * OUTPUT_BINS
    live[10], live[19] = 30, 10  # bin 19 never seen: assume its mid confidence
    assert table.estimate(live, mids) == pytest.approx((30 * 0.6 + 10 * 0.975) / 40)
    with pytest.raises(MetadataError):
        AccuracyTable(count=tuple(count), correct=tuple(c + 101 for c in correct))


def test_without_labels_there_is_no_accuracy_table() -> None:
    X, P, _ = _data(200)
    ref = build_reference(X, P, feature_names=FEATURES, class_names=CLASSES)
    assert ref.accuracy is None and ref.to_dict()["accuracy"] is None
    assert ref.estimate_accuracy([1] * OUTPUT_BINS) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda x, p, y: (x[:, :3], p, y), "features must be"),
        (lambda x, p, y: (x, p[:, :2], y), "probabilities must be"),
        (lambda x, p, y: (np.where(x[0, 0] == x, np.nan, x), p, y), "finite"),
        (lambda x, p, y: (x, p * 2.0, y), r"\[0, 1\]"),
        (lambda x, p, y: (x, p, y + 1), "class indices"),
        (lambda x, p, y: (x, p, y[:-1]), "labels must be"),
        (lambda x, p, y: (x, p, y.astype(float)), "labels must be"),
        (lambda x, p, y: (x[:0], p[:0], y[:0]), "features must be"),
    ],
)
def test_build_reference_refuses_bad_input(change: Any, message: str) -> None:
    X, P, y = change(*_data(100))
    with pytest.raises(MetadataError, match=message):
        build_reference(X, P, y, feature_names=FEATURES, class_names=CLASSES)


def test_build_reference_refuses_values_whose_moments_overflow() -> None:
    X, P, y = _data(100)
    huge = X.astype(np.float64)
    huge[0, 0] = 1e300
    with pytest.raises(MetadataError, match="overflow"):
        build_reference(huge, P, y, feature_names=FEATURES, class_names=CLASSES)


def test_build_reference_refuses_duplicate_names() -> None:
    X, P, y = _data(100)
    with pytest.raises(MetadataError, match="distinct"):
        build_reference(X, P, y, feature_names=("a", "a", "b", "c"), class_names=CLASSES)


# -- the format --------------------------------------------------------------


def test_round_trip_through_canonical_json(reference: DriftReference) -> None:
    data = reference.to_bytes()
    assert data == canonical.encode(reference.to_dict())
    again = DriftReference.from_bytes(data)
    assert again == reference
    assert again.to_bytes() == data
    assert again.digest() == reference.digest()
    np.testing.assert_array_equal(again.edges(), reference.edges())


def test_digest_is_stable_and_sensitive(reference: DriftReference) -> None:
    X, P, y = _data()
    rebuilt = build_reference(X, P, y, feature_names=FEATURES, class_names=CLASSES)
    assert rebuilt.digest() == reference.digest()
    assert len(reference.digest()) == 64
    other = build_reference(X[:-1], P[:-1], y[:-1], feature_names=FEATURES, class_names=CLASSES)
    assert other.digest() != reference.digest()


def test_digest_of_a_fixed_reference_never_changes() -> None:
    """Exactly representable data: the digest is a format-stability check."""
    X = np.arange(17, dtype=np.float64).reshape(17, 1)
    P = np.tile([0.75, 0.25], (17, 1))
    y = np.array([0, 1] * 8 + [0])
    ref = build_reference(X, P, y, feature_names=["x"], class_names=["ok", "fault"])
    assert ref.features[0].edges == tuple(float(i) for i in range(17))
    assert ref.features[0].moments.m2 == 408.0
    assert ref.digest() == "e723e1c219f7a5c17297b9bc4fc3717f77ab1afda211bace6d15d2767456a275"


def test_unknown_fields_survive_and_count_in_the_digest(reference: DriftReference) -> None:
    doc = reference.to_dict()
    doc["x-trained-on"] = {"dataset": "2025-q3"}
    doc["features"][0]["x-unit"] = "mm/s"
    doc["output"]["x-calibrated"] = True
    parsed = DriftReference.from_dict(copy.deepcopy(doc))
    assert parsed.unrecognized_fields == {"x-trained-on": {"dataset": "2025-q3"}}
    assert parsed.to_dict() == doc
    assert parsed.digest() != reference.digest()


def _mutations() -> list[tuple[str, Any]]:
    def setter(path: list[Any], value: Any) -> Any:
        def apply(doc: dict[str, Any]) -> None:
            target = doc
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value

        return apply

    def delete(key: str) -> Any:
        return lambda doc: doc.pop(key)

    def add_one(path: list[Any]) -> Any:
        def apply(doc: dict[str, Any]) -> None:
            target = doc
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] += 1

        return apply

    def swap_edges(doc: dict[str, Any]) -> None:
        edges = doc["features"][0]["edges"]
        edges[3], edges[4] = edges[4], edges[3]

    return [
        ("format", setter(["format"], "edgefleet.drift-reference/2")),
        ("missing n", delete("n")),
        ("n is a string", setter(["n"], "2000")),
        ("n is a bool", setter(["n"], True)),
        ("no features", setter(["features"], [])),
        ("features not a list", setter(["features"], {"f0": {}})),
        ("edges not increasing", swap_edges),
        ("edge not a number", setter(["features", 0, "edges", 2], "1.5")),
        ("too few edges", setter(["features", 0, "edges"], [0.0, 1.0])),
        ("counts wrong length", setter(["features", 1, "counts"], [2000])),
        ("counts do not sum to n", add_one(["features", 1, "counts", 5])),
        ("negative count", setter(["features", 1, "counts", 0], -1)),
        ("bool count", setter(["features", 1, "counts", 0], False)),
        ("moments n differs", add_one(["features", 2, "moments", "n"])),
        ("negative m2", setter(["features", 2, "moments", "m2"], -1.0)),
        ("min above max", setter(["features", 0, "moments", "min"], 1e9)),
        ("duplicate feature", setter(["features", 1, "name"], "f0")),
        ("duplicate class", setter(["class_names"], ["a", "a", "c"])),
        ("one class", setter(["class_names"], ["a"])),
        ("class counts length", setter(["output", "class_counts"], [1000, 1000])),
        ("histogram missing", lambda doc: doc["output"]["histograms"].pop("entropy")),
        ("histogram range", setter(["output", "histograms", "margin", "low"], 1.0)),
        ("histogram sum", add_one(["output", "histograms", "margin", "counts", 0])),
        ("accuracy bins", setter(["accuracy", "bins"], "entropy")),
        ("correct above count", setter(["accuracy", "correct", 19], 10**6)),
        ("accuracy counts differ", add_one(["accuracy", "count", 0])),
        ("output not an object", setter(["output"], [])),
    ]


@pytest.mark.parametrize(("case", "mutate"), _mutations(), ids=[m[0] for m in _mutations()])
def test_from_dict_refuses_malformed_documents(
    reference: DriftReference, case: str, mutate: Any
) -> None:
    doc = copy.deepcopy(reference.to_dict())
    mutate(doc)
    with pytest.raises(MetadataError):
        DriftReference.from_dict(doc)


@pytest.mark.parametrize("data", [b"", b"[]", b'{"format": 1}', b"\xff", b'{"a":1,"a":2}'])
def test_from_bytes_refuses_non_documents(data: bytes) -> None:
    with pytest.raises(MetadataError):
        DriftReference.from_bytes(data)


# -- properties --------------------------------------------------------------

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=200, deadline=None)
@given(
    reference=hnp.arrays(np.float64, st.integers(1, 200), elements=finite),
    live=hnp.arrays(np.float64, st.integers(0, 200), elements=any_float),
)
def test_bin_counts_sum_to_the_finite_values(reference: np.ndarray, live: np.ndarray) -> None:
    edges = quantile_edges(reference)
    assert np.all(np.diff(edges) > 0)
    counts = bin_counts(live, edges)
    assert counts.shape == (18,)
    assert counts.sum() == np.isfinite(live).sum()
    own = bin_counts(reference, edges)
    assert own.sum() == reference.size and own[0] == own[-1] == 0


@settings(max_examples=100, deadline=None)
@given(
    table=hnp.arrays(
        np.float64,
        st.tuples(st.integers(0, 60), st.just(3)),
        elements=st.one_of(finite, st.just(np.nan), st.just(np.inf)),
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_bin_counts_matrix_matches_per_feature_counts(table: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    edges = np.array([quantile_edges(rng.normal(0, 1e3, 50)) for _ in range(3)])
    matrix = bin_counts_matrix(table, edges)
    for j in range(3):
        np.testing.assert_array_equal(matrix[j], bin_counts(table[:, j], edges[j]))


@settings(max_examples=200, deadline=None)
@given(
    values=hnp.arrays(np.float64, st.integers(2, 300), elements=finite),
    cuts=st.lists(st.integers(0, 300), max_size=4),
)
def test_merged_moments_match_numpy(values: np.ndarray, cuts: list[int]) -> None:
    bounds = sorted({0, values.size, *(c % (values.size + 1) for c in cuts)})
    parts = [Moments.of(values[a:b]) for a, b in itertools.pairwise(bounds)]
    merged = Moments()
    for part in reversed(parts):  # merge order must not matter
        merged = part.merge(merged)
    centered = values - values.mean()
    scale = max(1.0, float(np.abs(values).max()))
    assert merged.n == values.size
    assert merged.mean == pytest.approx(values.mean(), rel=1e-9, abs=1e-9 * scale)
    assert merged.m2 == pytest.approx(np.sum(centered**2), rel=1e-7, abs=1e-7 * scale**2)
    assert merged.m3 == pytest.approx(np.sum(centered**3), rel=1e-6, abs=1e-6 * scale**3)
    assert merged.m4 == pytest.approx(np.sum(centered**4), rel=1e-6, abs=1e-6 * scale**4)
    assert (merged.min, merged.max) == (values.min(), values.max())
    assert merged.variance(ddof=1) == pytest.approx(
        np.var(values, ddof=1), rel=1e-7, abs=1e-7 * scale**2
    )


def test_moments_shape_statistics_and_serialization() -> None:
    rng = np.random.default_rng(3)
    values = rng.exponential(2.0, 50_000)
    m = Moments.of(values).update(rng.exponential(2.0, 50_000))
    assert m.skewness() == pytest.approx(2.0, rel=0.1)  # exponential: skew 2
    assert m.excess_kurtosis() == pytest.approx(6.0, rel=0.2)  # and excess kurtosis 6
    assert Moments.from_dict(canonical.decode(canonical.encode(m.to_dict()))) == m
    empty = Moments.of([np.nan, np.inf])
    assert empty == Moments() and empty.to_dict()["min"] is None
    assert Moments.from_dict(empty.to_dict()) == empty
    assert math.isnan(empty.variance()) and math.isnan(Moments.of([1.0]).skewness())
    assert Moments.of([1.0, 2.0]).merge(Moments()) == Moments.of([1.0, 2.0])
    with pytest.raises(MetadataError):
        Moments.from_dict({**empty.to_dict(), "m2": 1.0})
