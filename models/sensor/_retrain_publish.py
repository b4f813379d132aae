"""The retraining job's last three steps: push, release, canary rollout.

Theory of operation: :func:`publish` runs after the new model was accepted.
It registers the version (the control plane validates it again and builds
the drift reference), releases it, and starts the canary rollout, printing
one numbered step each. The rollout's target is, in order: ``--selector``;
the drift evidence's cohort (a label selector); else every device, which is
refused when some device runs another model (a retrained ``sensor`` must not
land on a device that serves something else: name the devices with
``--selector``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fleetcore.runtimes import available_runtimes
from models.sensor._narrative import Narrative
from models.sensor._retrain_api import ControlPlane, NoDataError
from models.sensor._retrain_check import model_devices, rollout_document
from models.sensor._retrain_data import F32, I64, Combined, dataset_npz
from models.sensor._retrain_fleet import (
    create_release,
    create_rollout,
    list_devices,
    plan_rollout,
    push_version,
    read_release_key,
)


@dataclass(frozen=True)
class Target:
    """Where the canary rollout goes and how it was chosen."""

    model: str
    canary_percent: float
    approval: bool
    selector: str | None  # --selector
    cohort: str | None  # from the drift evidence
    release_key: Path | None


def _selector(api: ControlPlane, target: Target) -> tuple[str | None, str]:
    if target.selector:
        return target.selector, f"selector {target.selector!r}"
    if target.cohort:
        return target.cohort, f"the drifted cohort {target.cohort!r}"
    ours, others = model_devices(list_devices(api), target.model)
    if others:
        shown = ", ".join(others[:5]) + (" …" if len(others) > 5 else "")
        raise NoDataError(
            f"{len(others)} device(s) run another model ({shown}); name the {target.model} "
            "devices with --selector"
        )
    return None, f"every device ({ours} now)"


def publish(
    api: ControlPlane,
    target: Target,
    version: str,
    report: Narrative,
    *,
    float_path: Path,
    int8_path: Path,
    mix: Combined,
    original_holdout: tuple[F32, I64],
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """Push, release and roll out ``version``; returns what the JSON line reports."""
    model = target.model
    key = None if target.release_key is None else read_release_key(target.release_key)
    selector, chosen = _selector(api, target)  # before pushing: a refusal leaves nothing behind
    eval_x = np.concatenate([original_holdout[0], mix.holdout[0]])
    eval_y = np.concatenate([original_holdout[1], mix.holdout[1]])
    quantization = {
        "scheme": "int8-static",
        "quant_format": "QDQ",
        "activation_type": "QInt8",
        "weight_type": "QInt8",
        "per_channel": False,
        "calibration_method": "MinMax",
        "calibration_rows": int(mix.calibration.shape[0]),
        "onnxruntime_version": available_runtimes().get("onnxruntime", "unknown"),
    }
    pushed = push_version(
        api,
        model,
        version,
        float_model=float_path,
        int8_model=int8_path,
        eval_npz=dataset_npz(eval_x, eval_y),
        reference_npz=dataset_npz(mix.reference_x, mix.reference_y),
        quantization=quantization,
        provenance=provenance,
    )
    accuracy = pushed.validation.get("accuracy")
    report.step(
        "push",
        f"{model}@{version} {pushed.state} by the control plane"
        + ("" if accuracy is None else f" (accuracy {accuracy:.4f} on {len(eval_y)} rows)")
        + f", parent {version}-float",
        f"drift reference sha256 {pushed.drift_reference_sha256}",
        f"(from {mix.reference_x.shape[0]} captured rows: the inputs devices see now)",
    )

    release = create_release(api, model, version, key)
    signer = "the release key here" if key is not None else "the control plane"
    report.step(
        "release",
        f"{model}@{version} is release {release['counter']} ({release['state']}), signed by "
        f"{signer}, {release['signatures']} signature(s)",
    )

    document = rollout_document(
        model,
        version,
        canary_percent=target.canary_percent,
        approval=target.approval,
        selector=selector,
    )
    planned = plan_rollout(api, document)
    result: dict[str, Any] = {
        "version": version,
        "release": int(release["counter"]),
        "release_state": release["state"],
        "drift_reference_sha256": pushed.drift_reference_sha256,
        "rollout": None,
        "rollout_id": None,
        "wave_sizes": None,
        "selector": selector,
    }
    if not planned["targets"]:
        # Nothing to roll out to (a smoke run without devices, or a cohort that has
        # none left): the release stands, and an operator can roll it out later.
        report.step(
            "rollout",
            f"none created: no device of {chosen} can take {model}@{version} now",
            f"later: fleetctl rollout create --name {document['metadata']['name']} "
            f"--release {model}@{version} --waves {target.canary_percent:g},100",
        )
        return result
    created = create_rollout(api, document)
    rollout, plan = created["rollout"], created["plan"]
    gate = ", approval before 100 %" if target.approval else ""
    report.step(
        "rollout",
        f"{rollout['name']} ({rollout['id']}): waves {plan['wave_sizes']} "
        f"[{target.canary_percent:g} %, 100 %]{gate}, targets {chosen}",
        f"watch it: fleetctl rollout status {rollout['name']} --watch",
    )
    result.update(rollout=rollout["name"], rollout_id=rollout["id"], wave_sizes=plan["wave_sizes"])
    return result


__all__ = ["Target", "publish"]
