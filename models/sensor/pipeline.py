"""The sensor model's build job: data to signed-ready artifacts, step by step.

Theory of operation: ``python -m models.sensor.pipeline [--out DIR]
[--samples N] [--seed S] [--export-data]`` runs, in order,

1. data: train / calibration / held-out / reference / drifted splits
   (:mod:`models.sensor.recipe`), each from its own seed;
2. train the numpy MLP and save its weights;
3. export the float ONNX graph;
4. quantize it to int8, static (QDQ, calibrated) and dynamic;
5. evaluate every variant through :mod:`fleetcore.runtimes`, plus the
   committed int8 TFLite model when a TFLite interpreter is installed;
6. build the release's drift reference from the reference split and the
   int8-static model's outputs (the variant that ships), write
   ``drift-reference.json`` and print its digest, and show how far the drifted
   split has moved (population stability index per feature);
7. write ``summary.json`` (everything printed, machine-readable); with
   ``--export-data``, also the datasets an operator uploads to the control
   plane: ``calibration.npz`` (``x``), ``eval.npz`` (held-out ``x``, ``y``) and
   ``reference.npz`` (``x``, ``y``, ``feature_names``, ``class_names``), in the
   layout ``control_plane.registry.load_dataset`` reads.

It is deterministic for a given ``(samples, seed)``; the defaults reproduce the
weights the committed TFLite model was built from (checked by digest). Any
failure ends the run with exit status 1 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

from fleetcore.drift import DriftReference, bin_counts_matrix, build_reference
from fleetcore.errors import EdgefleetError
from fleetcore.runtimes import available_runtimes, load_model
from models.sensor import recipe
from models.sensor._narrative import Narrative
from models.sensor.data import CLASS_NAMES, FEATURE_NAMES
from models.sensor.evaluate import VariantResult, evaluate_variant, predict_proba
from models.sensor.export import IR_VERSION, OPSET, export_onnx
from models.sensor.quantize import quantize_int8_dynamic, quantize_int8_static
from models.sensor.tflite_build import ARTIFACTS, PROVENANCE_NAME, TFLITE_NAME

DEFAULT_OUT = Path("build/sensor")
COMMITTED_TFLITE = ARTIFACTS / TFLITE_NAME
#: PSI above this is conventionally a significant population shift.
PSI_ALERT = 0.2


def psi(reference: npt.NDArray[np.int64], live: npt.NDArray[np.int64]) -> float:
    """Population stability index of two count vectors over the same bins."""
    r = (reference + 0.5) / (reference.sum() + 0.5 * reference.size)
    q = (live + 0.5) / (live.sum() + 0.5 * live.size)
    return float(np.sum((q - r) * np.log(q / r)))


def _kb(size: int) -> str:
    return f"{size / 1000:.1f} kB"


def _tflite_variant(path: Path | None, weights_digest: str) -> tuple[bool, str, bool | None]:
    """(evaluate?, why not / provenance note, built from this run's weights?)."""
    if path is None or not path.exists():
        return False, "no committed TFLite model", None
    interpreters = sorted(set(available_runtimes()) - {"onnxruntime"})
    if not interpreters:
        return False, "no TFLite interpreter installed (edgefleet[tflite])", None
    provenance = path.parent / PROVENANCE_NAME
    if not provenance.exists():
        return True, "no provenance record", None
    built_from = json.loads(provenance.read_text())["weights"]["sha256"]
    same = built_from == weights_digest
    note = "built from these weights" if same else f"built from other weights ({built_from[:12]})"
    return True, note, same


def run(
    out: Path = DEFAULT_OUT,
    *,
    samples: int = recipe.DEFAULT_SAMPLES,
    seed: int = recipe.DEFAULT_SEED,
    console: Console | None = None,
    tflite_model: Path | None = COMMITTED_TFLITE,
    export_data: bool = False,
) -> dict[str, Any]:
    """Run every step into ``out``; return (and write) the summary."""
    started = time.perf_counter()
    # Not on a terminal (CI logs, pipes): wide enough that the table never wraps.
    console = console or Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    report = Narrative(console, steps=7)
    console.print(
        f"edgefleet sensor pipeline: samples={samples} seed={seed} out={out}", markup=False
    )
    splits = recipe.make_splits(samples, seed)
    out.mkdir(parents=True, exist_ok=True)
    y_train = splits.train[1]
    shares = np.bincount(y_train, minlength=len(CLASS_NAMES)) / len(y_train)
    sizes = {
        "train": len(y_train),
        "calibration": len(splits.calibration),
        "heldout": len(splits.heldout[1]),
        "reference": len(splits.reference[1]),
        "drifted": len(splits.drifted[1]),
    }
    d = splits.drift
    report.step(
        "data",
        " | ".join(f"{k} {v}" for k, v in sizes.items())
        + f"  ({len(FEATURE_NAMES)} features, {len(CLASS_NAMES)} classes)",
        "classes: " + ", ".join(f"{c} {s:.0%}" for c, s in zip(CLASS_NAMES, shares, strict=True)),
        f"drifted split: mean_shift={d.mean_shift} std, scale={d.scale}, "
        f"new_regime={d.new_regime:.0%} overload",
    )

    model, train_report = recipe.fit(splits, seed)
    weights_path = out / "sensor-weights.npz"
    model.save(weights_path)
    shape = "-".join(
        str(n) for n in (model.n_features, *recipe.train_config().hidden, model.n_classes)
    )
    report.step(
        "train",
        f"MLP {shape}, {train_report.epochs} epochs in {train_report.seconds:.1f} s, "
        f"loss {train_report.final_loss:.3f}, train accuracy {train_report.train_accuracy:.4f}",
        f"weights sha256 {model.digest()} -> {weights_path.name}",
    )

    meta = {"seed": str(seed), "samples": str(samples)}
    float_path = export_onnx(model, out / "sensor-float.onnx", metadata=meta)
    report.step(
        "export",
        f"{float_path.name} ({_kb(float_path.stat().st_size)}, opset {OPSET}, IR {IR_VERSION}, "
        "onnx.checker passed)",
    )

    static_path = quantize_int8_static(
        float_path, out / "sensor-int8-static.onnx", splits.calibration
    )
    dynamic_path = quantize_int8_dynamic(float_path, out / "sensor-int8-dynamic.onnx")
    report.step(
        "quantize",
        f"{static_path.name} ({_kb(static_path.stat().st_size)}, QDQ, "
        f"{len(splits.calibration)} calibration rows)",
        f"{dynamic_path.name} ({_kb(dynamic_path.stat().st_size)}, int8 weights, "
        "per-batch activation scales)",
    )

    float_proba = model.predict_proba(splits.heldout[0])
    variants = {"float": float_path, "int8-dynamic": dynamic_path, "int8-static": static_path}
    use_tflite, tflite_note, tflite_same = _tflite_variant(tflite_model, model.digest())
    if use_tflite and tflite_model is not None:
        variants["tflite-int8"] = tflite_model
    results: list[VariantResult] = [
        evaluate_variant(name, path, splits.heldout, splits.drifted, float_proba)
        for name, path in variants.items()
    ]
    report.step(
        "evaluate",
        f"{len(results)} variants on {sizes['heldout']} held-out rows "
        f"(and {sizes['drifted']} drifted rows), one thread",
        f"tflite-int8: {tflite_note}" + ("" if use_tflite else " - skipped"),
    )

    reference = _drift_reference(out, static_path, splits)
    ref_path = out / "drift-reference.json"
    psis = _drift_demo(reference, splits)
    alerts = [name for name, value in psis.items() if value > PSI_ALERT]
    top = sorted(psis.items(), key=lambda item: -item[1])[:4]
    report.step(
        "drift",
        f"{ref_path.name} ({_kb(ref_path.stat().st_size)}, n={reference.n}, "
        "outputs of int8-static)",
        f"reference sha256 {reference.digest()}",
        f"drifted split: {len(alerts)}/{len(psis)} features with PSI > {PSI_ALERT}",
        "largest PSI: " + ", ".join(f"{name} {value:.2f}" for name, value in top),
    )

    summary: dict[str, Any] = {
        "samples": samples,
        "seed": seed,
        "splits": sizes,
        "drift": {"mean_shift": d.mean_shift, "scale": d.scale, "new_regime": d.new_regime},
        "training": {
            "epochs": train_report.epochs,
            "seconds": round(train_report.seconds, 3),
            "final_loss": train_report.final_loss,
            "train_accuracy": train_report.train_accuracy,
            "weights_sha256": model.digest(),
        },
        "variants": [r.to_dict() for r in results],
        "tflite": {"evaluated": use_tflite, "note": tflite_note, "same_weights": tflite_same},
        "drift_reference": {"file": ref_path.name, "sha256": reference.digest()},
        "drifted_psi": psis,
        "runtimes": available_runtimes(),
        "seconds": round(time.perf_counter() - started, 3),
    }
    lines = []
    if export_data:
        written = export_datasets(out, splits)
        summary["datasets"] = {name: path.name for name, path in written.items()}
        lines.append(
            "datasets: "
            + ", ".join(f"{path.name} ({sizes[name]} rows)" for name, path in written.items())
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    report.step("summary", f"summary.json written; total {summary['seconds']:.1f} s", *lines)
    console.print(_table(results))
    return summary


def export_datasets(out: Path, splits: recipe.Splits) -> dict[str, Path]:
    """Write the calibration, held-out and reference splits as dataset ``.npz`` files.

    Same layout as ``control_plane.registry.load_dataset`` reads (models may not
    import the control plane, so it is written here with numpy): ``x`` float32
    ``[n, F]``, ``y`` int64 ``[n]``, names as unicode arrays.
    """
    names = {
        "feature_names": np.array(FEATURE_NAMES, dtype=np.str_),
        "class_names": np.array(CLASS_NAMES, dtype=np.str_),
    }
    contents: dict[str, tuple[str, dict[str, npt.NDArray[Any]]]] = {
        "calibration": ("calibration.npz", {"x": splits.calibration}),
        "heldout": ("eval.npz", {"x": splits.heldout[0], "y": splits.heldout[1]}),
        "reference": (
            "reference.npz",
            {"x": splits.reference[0], "y": splits.reference[1], **names},
        ),
    }
    written = {}
    for split, (filename, arrays) in contents.items():
        path = out / filename
        with path.open("wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)
        written[split] = path
    return written


def _drift_reference(out: Path, shipped: Path, splits: recipe.Splits) -> DriftReference:
    X_ref, y_ref = splits.reference
    proba = predict_proba(load_model(shipped), X_ref)
    reference = build_reference(
        X_ref, proba, y_ref, feature_names=FEATURE_NAMES, class_names=CLASS_NAMES
    )
    (out / "drift-reference.json").write_bytes(reference.to_bytes())
    return reference


def _drift_demo(reference: DriftReference, splits: recipe.Splits) -> dict[str, float]:
    edges = reference.edges()
    ref_counts = np.array([f.counts for f in reference.features], dtype=np.int64)
    live = bin_counts_matrix(splits.drifted[0], edges)
    return {
        name: round(psi(ref_counts[j], live[j]), 4)
        for j, name in enumerate(reference.feature_names)
    }


def _table(results: list[VariantResult]) -> Table:
    table = Table(title="sensor model variants (held-out data)")
    for column in (
        "variant",
        "runtime",
        "accuracy",
        "agreement",
        "drifted acc.",
        "size",
        "p50 1-row",
    ):
        table.add_column(column, justify="left" if column in ("variant", "runtime") else "right")
    for r in results:
        table.add_row(
            r.name,
            r.runtime,
            f"{r.accuracy:.4f}",
            f"{r.agreement:.2%}",
            f"{r.drifted_accuracy:.4f}",
            _kb(r.size_bytes),
            f"{r.latency_ms_p50 * 1000:.0f} us",
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build, quantize and evaluate the sensor model.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--samples", type=int, default=recipe.DEFAULT_SAMPLES)
    parser.add_argument("--seed", type=int, default=recipe.DEFAULT_SEED)
    parser.add_argument(
        "--export-data",
        action="store_true",
        help="also write calibration.npz, eval.npz and reference.npz for the control plane",
    )
    args = parser.parse_args(argv)
    try:
        run(args.out, samples=args.samples, seed=args.seed, export_data=args.export_data)
    except EdgefleetError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 1
    except (OSError, ValueError, RuntimeError, KeyError, ImportError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
