"""The retraining job the drift loop calls: captured fleet data in, a canary rollout out.

Theory of operation: ``python -m models.sensor.retrain --model sensor`` runs,
in order, printing one numbered line per step and a JSON line at the end:

1. current: find the release to improve on (the one the drift evidence
   names, else the newest) and download its model, checking the sha256;
2. captures: list what devices captured since ``--since`` (default: the
   evidence window's start, else the current release's creation) and
   download each ``.npz``, checking the sha256. With no captured rows the
   evidence's ``simulated_drift`` (smoke runs) stands in; otherwise the job
   stops with exit status 2 rather than retrain on nothing;
3. data: the recipe's original training data plus the labelled captured
   rows, recent data weighted to ``--recent-share`` of the mass; a share of
   the labelled captures is held out (``_retrain_data``);
4. train the sensor MLP; 5. export ONNX and quantize to int8 (static,
   calibrated on original and captured rows);
6. validate: the new int8 model against the current one on the original and
   the drifted holdout; it must beat the current model on the drifted one
   and lose at most one point on the original one, else exit status 3 with
   the comparison table and nothing pushed;
7. push the int8 version (and its float parent) with held-out and reference
   data, so the control plane validates it and builds its drift reference;
8. release it (signed by the control plane, or with ``--release-key``);
9. rollout: a canary wave of ``--canary-percent`` then 100 %, with an
   approval before the second wave unless ``--no-approval``; targets the
   evidence's cohort (a label selector), else every device.

``--dry-run`` stops after step 6. Exit status: 0 done, 1 the control plane
refused or failed, 2 no (or too little) data or bad input, 3 rejected.
Inputs never come from the network unverified: every artifact is checked
against its sha256 before it is parsed.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from fleetcore.errors import EdgefleetError
from fleetcore.runtimes import load_model
from models.sensor import recipe
from models.sensor._narrative import Narrative
from models.sensor._retrain_api import ControlPlane, NoDataError, RetrainError, resolve_login
from models.sensor._retrain_check import Comparison, compare, next_version
from models.sensor._retrain_data import SIMULATED_ROWS, Rows, combine
from models.sensor._retrain_fleet import (
    Fetched,
    cohort_devices,
    current_release,
    fetch_captures,
)
from models.sensor._retrain_options import (
    EVIDENCE_ENV,
    Options,
    options_from_args,
    parser,
)
from models.sensor._retrain_publish import Target, publish
from models.sensor.data import CLASS_NAMES, generate
from models.sensor.evaluate import predict_proba
from models.sensor.export import export_onnx
from models.sensor.quantize import quantize_int8_static
from models.sensor.train import TrainConfig, train

#: Seed offset of simulated drifted rows: past the recipe's five split indices.
_SIMULATED_SPLIT = 5


def _captured(fetched: Fetched, options: Options, since: datetime) -> tuple[Rows, str]:
    """The captured rows, or simulated ones when the evidence describes the drift."""
    if fetched.rows.n:
        return fetched.rows, "captures"
    drift = None if options.evidence is None else options.evidence.simulated_drift
    if drift is None:
        raise NoDataError(f"no captured data since {since.isoformat()}: nothing to retrain on")
    x, y = generate(SIMULATED_ROWS, seed=options.seed * 16 + _SIMULATED_SPLIT, drift=drift)
    return Rows(x, y, np.zeros(len(y), np.int64)), "simulated"


def run(api: ControlPlane, options: Options, console: Console) -> dict[str, Any]:
    """Run every step; returns the result the JSON line reports.

    Raises:
        RetrainError: (and its subclasses) with the exit status to end with.
    """
    started = time.perf_counter()
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    evidence = options.evidence
    report = Narrative(console, steps=9)
    console.print(
        f"edgefleet retraining: model={options.model} out={out}"
        + (" (dry run)" if options.dry_run else ""),
        markup=False,
    )
    current = current_release(
        api, options.model, None if evidence is None else evidence.release, out
    )
    current_runtime = load_model(current.path, threads=1)
    report.step(
        "current",
        f"{options.model}@{current.version} (release {current.counter}), "
        f"sha256 {current.sha256[:16]}… verified, {current_runtime.runtime}",
    )

    since = options.since or (evidence.window_start if evidence else None) or current.created_at
    since = since or datetime.fromtimestamp(0, timezone.utc)
    # The retrained release goes to the drifted cohort: learn from, and describe, its data.
    fetched = fetch_captures(
        api, options.model, since, cohort_devices(api, evidence.cohort if evidence else None)
    )
    captured, source = _captured(fetched, options, since)
    lines = [
        f"{len(fetched.captures)} captures from {fetched.devices} device(s) since "
        f"{since.isoformat()}: {fetched.rows.n} rows, {fetched.rows.labelled} labelled",
        *(f"skipped {line}" for line in fetched.skipped),
    ]
    if fetched.dropped_rows:
        lines.append(f"dropped {fetched.dropped_rows} rows with NaN or infinite features")
    if source == "simulated":
        lines.append(f"none captured: {captured.n} rows simulated from the evidence's drift")
    report.step("captures", *lines)

    splits = recipe.make_splits(options.samples, options.seed)
    current_on_captured = (
        predict_proba(current_runtime, captured.x) if options.pseudo_threshold else None
    )
    mix = combine(
        splits.train,
        splits.calibration,
        captured,
        current_proba=current_on_captured,
        recent_share=options.recent_share,
        pseudo_threshold=options.pseudo_threshold,
        seed=options.seed,
    )
    counts = mix.counts()
    report.step(
        "data",
        f"train {counts['train_rows']} rows: {mix.original_rows} original + "
        f"{mix.recent_rows} captured x{mix.repeat} "
        f"({mix.recent_rows * mix.repeat / counts['train_rows']:.0%} of the mass)"
        + (f", {mix.pseudo_labelled} pseudo-labelled" if options.pseudo_threshold else ""),
        f"holdouts: original {len(splits.heldout[1])}, drifted {counts['drifted_holdout_rows']} "
        f"| calibration {counts['calibration_rows']} | reference {counts['reference_rows']}",
    )

    config = TrainConfig(seed=options.seed, epochs=options.epochs)
    model, trained = train(mix.train_x, mix.train_y, n_classes=len(CLASS_NAMES), config=config)
    report.step(
        "train",
        f"MLP, {trained.epochs} epochs in {trained.seconds:.1f} s, loss {trained.final_loss:.3f}, "
        f"train accuracy {trained.train_accuracy:.4f}",
        f"weights sha256 {model.digest()}",
    )

    meta = {"seed": str(options.seed), "retrained_from": f"{current.counter}"}
    float_path = export_onnx(model, out / "sensor-float.onnx", metadata=meta)
    int8_path = quantize_int8_static(float_path, out / "sensor-int8-static.onnx", mix.calibration)
    report.step(
        "quantize",
        f"{float_path.name} -> {int8_path.name} (QDQ, {len(mix.calibration)} calibration rows, "
        f"{int8_path.stat().st_size} bytes)",
    )

    new_runtime = load_model(int8_path, threads=1)
    holdouts = (splits.heldout[0], mix.holdout[0])
    comparison = compare(
        splits.heldout[1],
        mix.holdout[1],
        tuple(predict_proba(current_runtime, x) for x in holdouts),  # type: ignore[arg-type]
        tuple(predict_proba(new_runtime, x) for x in holdouts),  # type: ignore[arg-type]
    )
    verdict = "accepted" if comparison.accepted else "rejected: " + "; ".join(comparison.reasons)
    report.step("validate", f"int8 release {current.counter} vs int8 new: {verdict}")
    console.print(_table(comparison, current.version))

    result: dict[str, Any] = {
        "model": options.model,
        "outcome": "accepted" if comparison.accepted else "rejected",
        "current": {"version": current.version, "release": current.counter},
        "since": since.isoformat(),
        "source": source,
        "captures": len(fetched.captures),
        "devices": fetched.devices,
        "data": counts,
        "training": {
            "epochs": trained.epochs,
            "seconds": round(trained.seconds, 3),
            "weights_sha256": model.digest(),
        },
        "metrics": comparison.to_dict(),
        "dry_run": options.dry_run,
        "version": None,
        "release": None,
        "rollout": None,
    }
    if comparison.accepted and not options.dry_run:
        existing = [v["version"] for v in api.get(f"/v1/models/{options.model}/versions")]
        version = next_version(existing, options.bump)
        target = Target(
            model=options.model,
            canary_percent=options.canary_percent,
            approval=options.approval,
            selector=options.selector,
            cohort=None if evidence is None else evidence.cohort,
            release_key=options.release_key,
        )
        published = publish(
            api,
            target,
            version,
            report,
            float_path=float_path,
            int8_path=int8_path,
            mix=mix,
            original_holdout=splits.heldout,
            provenance=_provenance(options, current.counter, fetched, since, source),
        )
        result.update(published)
    elif comparison.accepted:
        for title in ("push", "release", "rollout"):
            report.step(title, "skipped (dry run)")
    result["seconds"] = round(time.perf_counter() - started, 3)
    (out / "retrain.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def _provenance(
    options: Options, counter: int, fetched: Fetched, since: datetime, source: str
) -> dict[str, Any]:
    provenance: dict[str, Any] = {
        "pipeline": "models.sensor.retrain",
        "retrained_from_release": counter,
        "data_source": source,
        "captures_since": since.isoformat(),
        "captures": len(fetched.captures),
        "captured_rows": fetched.rows.n,
        "labelled_rows": fetched.rows.labelled,
        "recent_share": options.recent_share,
        "seed": options.seed,
        "samples": options.samples,
    }
    if options.evidence is not None:
        provenance["drift_evidence_sha256"] = options.evidence.sha256
    return provenance


def _table(comparison: Comparison, current_version: str) -> Table:
    table = Table(title="accuracy of the int8 models on held-out data")
    for column in ("holdout", f"current ({current_version})", "new", "change"):
        table.add_column(column, justify="left" if column == "holdout" else "right")
    for row in comparison.rows():
        table.add_row(*row)
    return table


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    try:
        options = options_from_args(args)
        api = ControlPlane(resolve_login(args.server, args.token_env))
        result = run(api, options, console)
    except RetrainError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code
    except EdgefleetError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 1
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1
    print(json.dumps(result, sort_keys=True))
    if result["outcome"] == "rejected":
        reasons = "; ".join(result["metrics"]["reasons"])
        print(
            f"error: the retrained model was rejected, nothing pushed: {reasons}", file=sys.stderr
        )
        return 3
    return 0


__all__ = ["EVIDENCE_ENV", "Options", "main", "options_from_args", "run"]


if __name__ == "__main__":
    sys.exit(main())
