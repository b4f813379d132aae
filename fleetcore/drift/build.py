"""Building a drift reference from reference data and the model's outputs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fleetcore._checks import names_of
from fleetcore.drift.reference import (
    AccuracyTable,
    DriftReference,
    FeatureReference,
    Histogram,
    OutputReference,
)
from fleetcore.errors import MetadataError
from fleetcore.stats import (
    HISTOGRAMS,
    Moments,
    bin_counts,
    histogram,
    output_ranges,
    output_statistics,
    quantile_edges,
)


def build_reference(
    features: npt.ArrayLike,
    probabilities: npt.ArrayLike,
    labels: npt.ArrayLike | None = None,
    *,
    feature_names: Sequence[str],
    class_names: Sequence[str],
    output_name: str = "probabilities",
) -> DriftReference:
    """Summarize reference data ``[n, F]`` and the model's outputs ``[n, K]``.

    Raises:
        MetadataError: shapes disagree with the names, values are not finite,
            probabilities leave ``[0, 1]`` or labels are not class indices.
    """
    names = names_of(list(feature_names), "feature names")
    classes = names_of(list(class_names), "class names")
    x = np.asarray(features, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] != len(names):
        raise MetadataError(f"features must be [n >= 1, {len(names)}], got {list(x.shape)}")
    n = x.shape[0]
    if p.shape != (n, len(classes)):
        raise MetadataError(f"probabilities must be [{n}, {len(classes)}], got {list(p.shape)}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(p))):
        raise MetadataError("reference features and probabilities must be finite")
    if np.any(p < -1e-6) or np.any(p > 1 + 1e-6):
        raise MetadataError("probabilities must lie in [0, 1]")

    feature_refs = []
    for j, name in enumerate(names):
        edges = quantile_edges(x[:, j])
        feature_refs.append(
            FeatureReference(
                name=name,
                edges=tuple(float(v) for v in edges),
                counts=tuple(int(c) for c in bin_counts(x[:, j], edges)),
                moments=Moments.of(x[:, j]),
            )
        )

    ranges = output_ranges(len(classes))
    stats = output_statistics(p)
    hists = {
        name: Histogram(
            low=ranges[name][0],
            high=ranges[name][1],
            counts=tuple(int(c) for c in histogram(stats[name], *ranges[name])),
        )
        for name in HISTOGRAMS
    }
    predicted = np.argmax(p, axis=1)
    output = OutputReference(
        name=output_name,
        class_counts=tuple(int(c) for c in np.bincount(predicted, minlength=len(classes))),
        entropy=hists["entropy"],
        margin=hists["margin"],
        max_probability=hists["max_probability"],
    )

    accuracy = None
    if labels is not None:
        y = np.asarray(labels)
        if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
            raise MetadataError(f"labels must be {n} integers")
        if np.any(y < 0) or np.any(y >= len(classes)):
            raise MetadataError("labels must be class indices")
        low, high = ranges["max_probability"]
        right = stats["max_probability"][predicted == y]
        accuracy = AccuracyTable(
            count=hists["max_probability"].counts,
            correct=tuple(int(c) for c in histogram(right, low, high)),
        )

    return DriftReference(
        class_names=classes, n=n, features=tuple(feature_refs), output=output, accuracy=accuracy
    )


__all__ = ["build_reference"]
