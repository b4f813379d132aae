"""Benchmark: the on-device drift probe and its wire size.

Figures, each one JSON line with its same-run baseline:

* ``probe_update_batched``: ``DriftAccumulator.update`` with batches of 128
  rows x 32 features (5 classes), a window's ``take()`` included, in ns per
  sample; target 1000. Baseline: ``numpy.histogram`` per feature on the same
  batches (bin counts only: no NaN/Inf, moments or outputs).
* ``probe_update_single``: the same rows one call per sample; target 10000.
  Baseline: a bare loop of ``numpy.searchsorted`` per feature per sample.
* ``summary_bytes_per_feature``: an encoded 60 s window (600 samples,
  32 features) divided by 32, header and output part included; target 64.
  Also the time to ``encode`` and ``decode`` it.
* detection power, false alarms and accuracy-estimate error, from
  ``benchmarks._drift_stats`` when that module is present.

Timed runs alternate ours and the baseline so machine noise hits both alike;
medians over runs are reported.

Usage: ``python -m benchmarks.drift [--runs 9] [--quick]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np

from fleetcore.drift import DriftReference, build_reference
from fleetcore.drift.encoding import decode, encode
from fleetcore.drift.summary import DriftAccumulator, DriftSummary, WindowKey

FEATURES = 32
CLASSES = 5
BATCH = 128
WINDOW_SAMPLES = 600
Figure = dict[str, object]


def _reference(rng: np.random.Generator) -> DriftReference:
    x = rng.normal(size=(4000, FEATURES))
    p = rng.dirichlet(np.ones(CLASSES), 4000)
    return build_reference(
        x,
        p,
        np.argmax(p, axis=1),
        feature_names=[f"f{i}" for i in range(FEATURES)],
        class_names=[f"c{i}" for i in range(CLASSES)],
    )


def _median_ns(
    runs: int, rows: int, ours: Callable[[], None], base: Callable[[], None]
) -> tuple[float, float]:
    mine: list[float] = []
    theirs: list[float] = []
    ours()  # warm up both
    base()
    for _ in range(runs):
        for func, out in ((ours, mine), (base, theirs)):
            start = time.perf_counter()
            func()
            out.append((time.perf_counter() - start) / rows * 1e9)
    return statistics.median(mine), statistics.median(theirs)


def _update_figures(runs: int, quick: bool) -> Iterator[Figure]:
    rng = np.random.default_rng(0)
    ref = _reference(rng)
    edges = ref.edges()
    rows = 2560 if quick else 10240
    x = rng.normal(0.1, 1.1, size=(rows, FEATURES))
    p = rng.dirichlet(np.ones(CLASSES), rows)
    acc = DriftAccumulator(ref)

    def batched() -> None:
        for start in range(0, rows, BATCH):
            acc.update(x[start : start + BATCH], p[start : start + BATCH])
        acc.take()

    def histogram_baseline() -> None:
        for start in range(0, rows, BATCH):
            block = x[start : start + BATCH]
            for j in range(FEATURES):
                np.histogram(block[:, j], bins=edges[j])

    ours, base = _median_ns(runs, rows, batched, histogram_baseline)
    yield {
        "benchmark": "drift",
        "figure": "probe_update_batched",
        "features": FEATURES,
        "classes": CLASSES,
        "batch": BATCH,
        "edgefleet_ns_per_sample": round(ours),
        "numpy_histogram_per_feature_ns_per_sample": round(base),
        "ratio": round(base / ours, 3),
        "target_ns_per_sample": 1000,
        "meets_target": ours <= 1000,
        "runs": runs,
        "statistic": "median",
    }

    single_rows = rows // 8
    xs, ps = list(x[:single_rows]), list(p[:single_rows])

    def single() -> None:
        for xi, pi in zip(xs, ps, strict=True):
            acc.update(xi, pi)
        acc.take()

    def searchsorted_baseline() -> None:
        for xi in xs:
            for j in range(FEATURES):
                np.searchsorted(edges[j], xi[j], side="right")

    ours, base = _median_ns(runs, single_rows, single, searchsorted_baseline)
    yield {
        "benchmark": "drift",
        "figure": "probe_update_single",
        "features": FEATURES,
        "classes": CLASSES,
        "edgefleet_ns_per_sample": round(ours),
        "searchsorted_loop_ns_per_sample": round(base),
        "ratio": round(base / ours, 3),
        "target_ns_per_sample": 10000,
        "meets_target": ours <= 10000,
        "runs": runs,
        "statistic": "median",
    }


def _size_figure(runs: int) -> Figure:
    rng = np.random.default_rng(1)
    ref = _reference(rng)
    acc = DriftAccumulator(ref)
    acc.update(
        rng.normal(0.1, 1.1, size=(WINDOW_SAMPLES, FEATURES)),
        rng.dirichlet(np.ones(CLASSES), WINDOW_SAMPLES),
    )
    for _ in range(60):
        acc.feedback(float(rng.uniform(0.3, 1.0)), bool(rng.integers(0, 2)))
    key = WindowKey("bench-device-0001", "sensor", 1, ref.digest(), 1_700_000_040, 60, 1)
    summary = DriftSummary(key, acc.take())
    data = encode(summary)
    enc, dec = [], []
    for _ in range(max(runs, 5)):
        start = time.perf_counter()
        encode(summary)
        enc.append(time.perf_counter() - start)
        start = time.perf_counter()
        decode(data)
        dec.append(time.perf_counter() - start)
    per_feature = len(data) / FEATURES
    return {
        "benchmark": "drift",
        "figure": "summary_bytes_per_feature",
        "features": FEATURES,
        "classes": CLASSES,
        "window_samples": WINDOW_SAMPLES,
        "summary_bytes": len(data),
        "bytes_per_feature": round(per_feature, 2),
        "compressed": bool(data[5] & 1),
        "target_bytes_per_feature": 64,
        "meets_target": per_feature <= 64,
        "encode_us": round(statistics.median(enc) * 1e6, 1),
        "decode_us": round(statistics.median(dec) * 1e6, 1),
        "statistic": "median",
    }


def _statistics_figures(quick: bool) -> Iterator[Figure]:
    try:
        module = importlib.import_module("benchmarks._drift_stats")
    except ModuleNotFoundError:
        print("[drift] benchmarks._drift_stats is missing: no detection figures", file=sys.stderr)
        return
    figures = getattr(module, "figures", None)
    if figures is None:
        print("[drift] benchmarks._drift_stats has no figures(): skipped", file=sys.stderr)
        return
    yield from figures(quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="timed runs per side")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    for figure in _update_figures(runs, args.quick):
        print(json.dumps(figure), flush=True)
    print(json.dumps(_size_figure(runs)), flush=True)
    for figure in _statistics_figures(args.quick):
        print(json.dumps(figure), flush=True)


if __name__ == "__main__":
    main()
