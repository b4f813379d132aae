"""The drift reference of a release: what live data is compared against.

Theory of operation: the reference (training) data of a release is summarized
once, centrally, into a :class:`DriftReference`; the release manifest signs its
:meth:`~DriftReference.digest`. Devices bin their live inputs and outputs with
the same functions (re-exported here from :mod:`fleetcore.stats`:
:func:`bin_counts`, :func:`bin_counts_matrix`, :func:`output_histograms`)
against the reference's edges and ranges, so device counts and reference counts
are directly comparable and merge exactly by addition.

Contents, in canonical JSON (``format`` = ``edgefleet.drift-reference/1``):

- ``features``: per input feature, in model order, its name, 17 equal-mass
  ``edges`` (16 bins), 18 ``counts`` ``[below, bin 1..16, above]`` and
  ``moments`` (n, mean, M2, M3, M4, min, max). See :mod:`fleetcore.stats` for
  the bin rules and how tied quantiles still give strictly increasing edges.
- ``output``: predicted-class counts and 20-bin histograms of max probability
  on ``[1/K, 1]``, entropy (nats) on ``[0, ln K]`` and margin (top-1 minus
  top-2) on ``[0, 1]``.
- ``accuracy`` (``null`` without labels): per max-probability bin, the
  reference count and how many predictions were correct;
  :meth:`DriftReference.estimate_accuracy` turns a device's max-probability
  histogram into a label-free accuracy estimate.

Invariants, enforced on construction and so by :meth:`DriftReference.from_dict`
(which raises :class:`~fleetcore.errors.MetadataError`): every count vector sums
to ``n``; edges are finite and strictly increasing; moments describe ``n``
values; ``0 <= correct <= count`` per bin; all floats are finite. Unknown
fields are kept, so newer writers' additions survive older readers.
"""

from fleetcore.drift.build import build_reference
from fleetcore.drift.detect import (
    DetectionPolicy,
    FeatureResult,
    OutputResult,
    benjamini_hochberg,
    persistent,
    test_features,
    test_outputs,
)
from fleetcore.drift.encoding import MAX_SUMMARY_BYTES, decode, decode_key, encode, validate
from fleetcore.drift.estimate import AccuracyEstimate, estimate_accuracy
from fleetcore.drift.reference import (
    FORMAT,
    AccuracyTable,
    DriftReference,
    FeatureReference,
    Histogram,
    OutputReference,
)
from fleetcore.drift.summary import (
    DriftAccumulator,
    DriftCounts,
    DriftSummary,
    WindowKey,
    merge_all,
)
from fleetcore.stats import (
    FEATURE_BINS,
    FEATURE_COUNTS,
    FEATURE_EDGES,
    HISTOGRAMS,
    OUTPUT_BINS,
    bin_counts,
    bin_counts_matrix,
    histogram,
    output_histograms,
    output_ranges,
    output_statistics,
    quantile_edges,
)

__all__ = [
    "FEATURE_BINS",
    "FEATURE_COUNTS",
    "FEATURE_EDGES",
    "FORMAT",
    "HISTOGRAMS",
    "MAX_SUMMARY_BYTES",
    "OUTPUT_BINS",
    "AccuracyEstimate",
    "AccuracyTable",
    "DetectionPolicy",
    "DriftAccumulator",
    "DriftCounts",
    "DriftReference",
    "DriftSummary",
    "FeatureReference",
    "FeatureResult",
    "Histogram",
    "OutputReference",
    "OutputResult",
    "WindowKey",
    "benjamini_hochberg",
    "bin_counts",
    "bin_counts_matrix",
    "build_reference",
    "decode",
    "decode_key",
    "encode",
    "estimate_accuracy",
    "histogram",
    "merge_all",
    "output_histograms",
    "output_ranges",
    "output_statistics",
    "persistent",
    "quantile_edges",
    "test_features",
    "test_outputs",
    "validate",
]
