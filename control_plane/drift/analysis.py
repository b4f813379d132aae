"""Fleet drift analysis: merge stored summaries, test them, decide whether drift persists.

Theory of operation (pure: no clock, database or file). The input is the
decoded drift windows of one release (one reference digest), optionally of one
cohort, in any order. :func:`analyze`:

1. groups them into clock buckets of ``bucket_s`` and walks the buckets in time
   order, merging consecutive buckets into an *evidence window* until it holds
   ``min_samples`` samples: a test is run only when the expected count of each
   of the 16 equal-mass bins is at least ``min_samples / 16`` (5 at the default
   80), otherwise the buckets keep merging. A trailing window that is still
   short is reported as not tested;
2. tests each evidence window's features against the reference
   (:func:`fleetcore.drift.detect.test_features`: chi-square/G, binned KS,
   Welch z, kurtosis-adjusted variance, Benjamini-Hochberg across features; a
   feature drifts when significant *and* material);
3. calls a feature *persistent* when it drifted in ``persist_k`` of the last
   ``persist_m`` tested windows, and raises the alarm when any feature is;
4. measures breadth over the span of those windows: each device with enough
   samples is tested on its own; the share of tested devices that drift and
   their share of the traffic (samples) go into the evidence;
5. estimates accuracy over the span: from device feedback labels when there
   are enough, else label-free from the max-probability histogram and the
   reference's per-bin accuracy table (binned CBPE), with an interval.

Invariants: windows of another reference digest are never merged here (the
caller selects by release, whose manifest signs one digest); the result is a
function of the set of windows, not of their order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fleetcore.drift import DriftReference
from fleetcore.drift.detect import DetectionPolicy, FeatureResult, persistent, test_features
from fleetcore.drift.estimate import AccuracyEstimate, estimate_accuracy
from fleetcore.drift.summary import DriftCounts, merge_all
from fleetcore.stats import HISTOGRAMS

_MAX_PROBABILITY = HISTOGRAMS.index("max_probability")
#: Labelled predictions needed before the real accuracy replaces the estimate.
MIN_LABELLED = 200


@dataclass(frozen=True)
class Window:
    """One device's stored summary, decoded."""

    device: str
    release: int
    start: int
    length: int
    body: DriftCounts


@dataclass(frozen=True)
class AnalysisSettings:
    bucket_s: int = 3600
    min_samples: int = 80
    persist_k: int = 3
    persist_m: int = 4
    policy: DetectionPolicy = field(default_factory=DetectionPolicy)


@dataclass(frozen=True)
class EvidenceWindow:
    """Consecutive buckets merged until testable, and what the tests said."""

    start: int
    end: int
    n: int
    devices: int
    tested: bool
    features: tuple[FeatureResult, ...] = ()

    @property
    def drifted(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.drifted)

    @property
    def score(self) -> float:
        """The largest standardized mean shift or JS distance among drifted features."""
        return max((abs(f.mean_shift_sd or 0.0) for f in self.features if f.drifted), default=0.0)


@dataclass(frozen=True)
class Analysis:
    release: int
    reference: str
    windows: tuple[EvidenceWindow, ...]
    #: Feature results over the span of the last ``persist_m`` tested windows.
    span: tuple[FeatureResult, ...]
    span_start: int | None
    span_end: int | None
    #: Per feature: in how many of the last ``persist_m`` tested windows it drifted.
    drifted_windows: dict[str, int]
    persistent_features: tuple[str, ...]
    windows_considered: int
    devices_tested: int
    devices_drifted: int
    share_devices: float
    share_traffic: float
    samples: int
    accuracy: AccuracyEstimate | None
    reference_accuracy: float | None

    @property
    def alarm(self) -> bool:
        return bool(self.persistent_features)

    @property
    def windows_drifted(self) -> int:
        recent = [w for w in self.windows if w.tested][-self.windows_considered :]
        return sum(1 for w in recent if w.drifted)


def evidence_windows(
    reference: DriftReference, windows: Sequence[Window], settings: AnalysisSettings
) -> list[EvidenceWindow]:
    buckets: dict[int, list[Window]] = {}
    for window in windows:
        buckets.setdefault(window.start // settings.bucket_s, []).append(window)
    out: list[EvidenceWindow] = []
    pending: list[Window] = []
    merged: DriftCounts | None = None
    first = 0
    for bucket in sorted(buckets):
        if not pending:
            first = bucket
        pending.extend(buckets[bucket])
        # One merge per bucket: the running total grows, it is never rebuilt.
        part = merge_windows(buckets[bucket])
        merged = part if merged is None else merged.merge(part)
        if merged.n >= settings.min_samples:
            out.append(_tested(reference, pending, merged, first, bucket + 1, settings))
            pending, merged = [], None
    if pending and merged is not None:
        end = max(w.start for w in pending) // settings.bucket_s + 1
        out.append(_window(pending, merged, first, end, settings, ()))
    return out


def analyze(
    reference: DriftReference,
    release: int,
    windows: Sequence[Window],
    settings: AnalysisSettings | None = None,
) -> Analysis:
    settings = settings or AnalysisSettings()
    evidence = evidence_windows(reference, windows, settings)
    recent = [w for w in evidence if w.tested][-settings.persist_m :]
    counts: dict[str, int] = dict.fromkeys(reference.feature_names, 0)
    for window in recent:
        for name in window.drifted:
            counts[name] += 1
    persistent_features = tuple(
        name
        for name in reference.feature_names
        if persistent(
            [name in w.drifted for w in recent], k=settings.persist_k, m=settings.persist_m
        )
    )
    span_start = recent[0].start if recent else None
    span_end = recent[-1].end if recent else None
    in_span = [
        w
        for w in windows
        if span_start is not None and span_end is not None and span_start <= w.start < span_end
    ]
    span: tuple[FeatureResult, ...] = ()
    accuracy = None
    samples = 0
    if in_span:
        merged = merge_windows(in_span)
        samples = merged.n
        span = tuple(_test(reference, merged, settings))
        accuracy = _accuracy(reference, merged)
    tested, drifted, traffic, drifted_traffic = _breadth(reference, in_span, settings)
    return Analysis(
        release=release,
        reference=reference.digest(),
        windows=tuple(evidence),
        span=span,
        span_start=span_start,
        span_end=span_end,
        drifted_windows=counts,
        persistent_features=persistent_features,
        windows_considered=len(recent),
        devices_tested=tested,
        devices_drifted=drifted,
        share_devices=drifted / tested if tested else 0.0,
        share_traffic=drifted_traffic / traffic if traffic else 0.0,
        samples=samples,
        accuracy=accuracy,
        reference_accuracy=None if reference.accuracy is None else reference.accuracy.accuracy(),
    )


def _breadth(
    reference: DriftReference, windows: Sequence[Window], settings: AnalysisSettings
) -> tuple[int, int, int, int]:
    """Devices tested and drifted, and their samples, over ``windows``."""
    by_device: dict[str, list[Window]] = {}
    for window in windows:
        by_device.setdefault(window.device, []).append(window)
    tested = drifted = traffic = drifted_traffic = 0
    for own in by_device.values():
        merged = merge_windows(own)
        if merged.n < settings.min_samples:
            continue
        tested += 1
        traffic += merged.n
        if any(f.drifted for f in _test(reference, merged, settings)):
            drifted += 1
            drifted_traffic += merged.n
    return tested, drifted, traffic, drifted_traffic


def _accuracy(reference: DriftReference, merged: DriftCounts) -> AccuracyEstimate | None:
    labelled = merged.labelled if int(merged.labelled.sum()) >= MIN_LABELLED else None
    return estimate_accuracy(
        reference,
        merged.histograms[_MAX_PROBABILITY],
        labelled=labelled,
        correct=None if labelled is None else merged.correct,
    )


def merge_windows(windows: Sequence[Window]) -> DriftCounts:
    """Merged counts of ``windows``; sorted first, so float rounding in the moment
    merges does not depend on arrival order."""
    # Sorted first, so float rounding in the moment merges does not depend on arrival order.
    ordered = sorted(windows, key=lambda w: (w.start, w.device))
    return merge_all(w.body for w in ordered)


def _test(
    reference: DriftReference, merged: DriftCounts, settings: AnalysisSettings
) -> list[FeatureResult]:
    moments = [merged.feature_moments(i) for i in range(merged.n_features)]
    return test_features(reference, merged.counts, moments, settings.policy)


def _tested(
    reference: DriftReference,
    pending: Sequence[Window],
    merged: DriftCounts,
    first: int,
    end: int,
    settings: AnalysisSettings,
) -> EvidenceWindow:
    return _window(pending, merged, first, end, settings, tuple(_test(reference, merged, settings)))


def _window(
    pending: Sequence[Window],
    merged: DriftCounts,
    first: int,
    end: int,
    settings: AnalysisSettings,
    features: tuple[FeatureResult, ...],
) -> EvidenceWindow:
    return EvidenceWindow(
        start=first * settings.bucket_s,
        end=end * settings.bucket_s,
        n=merged.n,
        devices=len({w.device for w in pending}),
        tested=any(f.testable for f in features),
        features=features,
    )


__all__ = [
    "MIN_LABELLED",
    "Analysis",
    "AnalysisSettings",
    "EvidenceWindow",
    "Window",
    "analyze",
    "evidence_windows",
    "merge_windows",
]
