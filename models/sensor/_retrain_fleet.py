"""The retraining job's calls on the fleet: read the current release and captures, publish.

Theory of operation: every function here is one step of the job against the
control plane's HTTP API (:class:`~models.sensor._retrain_api.ControlPlane`),
in the order the job runs them:

1. :func:`current_release` finds the release to improve on (the one the
   drift evidence names, else the newest released one) and downloads its
   artifact, checking the sha256;
2. :func:`fetch_captures` lists the captures since a time and downloads
   each, checking its sha256; a capture that is not a readable ``.npz`` is
   skipped and reported, never fatal (one bad device must not stop the loop);
3. :func:`push_version` uploads the held-out and reference datasets, the float
   parent and the int8 model, and registers both versions; the control plane
   runs its validation gate and builds the drift reference from the
   reference data. A version the gate leaves in draft stops the job;
4. :func:`create_release` releases it: signed by the control plane, or, with
   an offline release key, left pending, signed here (the key file never
   leaves this machine) and the signature attached;
5. :func:`create_rollout` creates the canary rollout.

Nothing here decides anything; the decisions are in ``_retrain_check``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fleetcore.envelope import Envelope
from fleetcore.errors import EdgefleetError
from fleetcore.keys import PrivateKey
from models.sensor._retrain_api import ControlPlane, NoDataError, RejectedError, RetrainError
from models.sensor._retrain_data import Capture, Rows, load_capture, parse_captures

#: Environment variable with the passphrase of an encrypted release key (as fleetctl).
PASSPHRASE_ENV = "EDGEFLEET_KEY_PASSPHRASE"  # noqa: S105 - a variable name
#: Captures listed per request (the control plane's largest page).
PAGE = 10_000


@dataclass(frozen=True)
class CurrentRelease:
    model: str
    version: str
    counter: int
    sha256: str
    created_at: datetime | None
    path: Path


def current_release(
    api: ControlPlane, model: str, counter: int | None, out: Path
) -> CurrentRelease:
    releases = api.get("/v1/releases", model=model)
    found = [r for r in releases if r.get("model") == model]
    if counter is not None:
        found = [r for r in found if int(r["counter"]) == counter]
        if not found:
            raise NoDataError(f"{model} has no release {counter} (named by the drift evidence)")
    else:
        found = [r for r in found if r.get("state") == "released"]
        if not found:
            raise NoDataError(f"{model} has no release to retrain from")
    chosen = max(found, key=lambda r: int(r["counter"]))
    data = api.download(str(chosen["sha256"]))
    suffix = ".tflite" if data[4:8] == b"TFL3" else ".onnx"
    path = out / f"current-{chosen['counter']}{suffix}"
    path.write_bytes(data)
    created = chosen.get("created_at")
    return CurrentRelease(
        model=model,
        version=str(chosen["version"]),
        counter=int(chosen["counter"]),
        sha256=str(chosen["sha256"]),
        created_at=None if created is None else datetime.fromisoformat(str(created)),
        path=path,
    )


@dataclass
class Fetched:
    captures: list[Capture] = field(default_factory=list)
    rows: Rows = field(default_factory=Rows.empty)
    skipped: list[str] = field(default_factory=list)  # one line per unusable capture
    dropped_rows: int = 0  # rows with NaN or infinite features

    @property
    def devices(self) -> int:
        return len({c.device for c in self.captures})


def cohort_devices(api: ControlPlane, cohort: str | None) -> set[str] | None:
    """Ids of the devices in ``cohort`` (``label=value``); None for the whole fleet."""
    if not cohort or "=" not in cohort:
        return None
    label, _, value = cohort.partition("=")
    return {d["id"] for d in list_devices(api) if d.get("labels", {}).get(label) == value}


def fetch_captures(
    api: ControlPlane, model: str, since: datetime, devices: set[str] | None = None
) -> Fetched:
    """Captures since ``since``; with ``devices``, only theirs (the drifted cohort's)."""
    captures: list[Capture] = []
    seen: set[int | str] = set()
    after = since.isoformat()
    while True:  # oldest first; a full page means more may follow from its last window
        listing = api.get(f"/v1/models/{model}/captures", since=after, limit=PAGE)
        try:
            page = parse_captures(listing)
        except ValueError as exc:
            raise RetrainError(f"unexpected captures listing: {exc}") from exc
        fresh = [c for c in page if (c.id if c.id is not None else c.sha256) not in seen]
        seen.update(c.id if c.id is not None else c.sha256 for c in fresh)
        captures += [c for c in fresh if devices is None or c.device in devices]
        if len(page) < PAGE or not fresh:
            break
        after = page[-1].window_start
    fetched = Fetched()
    parts = []
    for capture in captures:
        data = api.download(capture.sha256)
        try:
            rows, dropped = load_capture(data)
        except ValueError as exc:
            fetched.skipped.append(f"{capture.device} {capture.window_start}: {exc}")
            continue
        fetched.captures.append(capture)
        fetched.dropped_rows += dropped
        parts.append(rows)
    fetched.rows = Rows.concat(parts)
    return fetched


@dataclass(frozen=True)
class Pushed:
    version: str
    state: str
    drift_reference_sha256: str | None
    validation: dict[str, Any]


def push_version(
    api: ControlPlane,
    model: str,
    version: str,
    *,
    float_model: Path,
    int8_model: Path,
    eval_npz: bytes,
    reference_npz: bytes,
    quantization: dict[str, Any],
    provenance: dict[str, Any],
) -> Pushed:
    """Register ``version`` (int8) with its float parent ``version-float``."""
    data = {
        "eval_data_sha256": api.upload(eval_npz, "npz"),
        "reference_data_sha256": api.upload(reference_npz, "npz"),
    }
    parent = f"{version}-float"
    float_sha = api.upload(float_model.read_bytes(), "onnx")
    float_body = {"version": parent, "artifact_sha256": float_sha, "provenance": provenance}
    api.post(f"/v1/models/{model}/versions", {**float_body, **data})
    body = {
        "version": version,
        "artifact_sha256": api.upload(int8_model.read_bytes(), "onnx"),
        "parent_version": parent,
        "quantization": quantization,
        "provenance": provenance,
        **data,
    }
    created = api.post(f"/v1/models/{model}/versions", body)
    if created.get("state") != "validated":
        reasons = "; ".join(created.get("reasons") or []) or str(created.get("state"))
        where = f"the control plane's validation gate kept {model}@{version} in draft"
        raise RejectedError(f"{where}: {reasons}")
    return Pushed(
        version=version,
        state=str(created["state"]),
        drift_reference_sha256=created.get("drift_reference_sha256"),
        validation=dict(created.get("validation") or {}),
    )


def read_release_key(path: Path, passphrase_env: str = PASSPHRASE_ENV) -> PrivateKey:
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise RetrainError(f"cannot read the release key {path}: {exc.strerror or exc}") from exc
    passphrase = os.environ.get(passphrase_env, "").encode() or None
    if PrivateKey.is_encrypted_pem(pem) and passphrase is None:
        raise RetrainError(f"{path} is encrypted: set {passphrase_env} to its passphrase")
    try:
        return PrivateKey.from_pem(pem, passphrase if PrivateKey.is_encrypted_pem(pem) else None)
    except EdgefleetError as exc:
        raise RetrainError(f"{path}: {exc}") from exc


def create_release(
    api: ControlPlane, model: str, version: str, key: PrivateKey | None
) -> dict[str, Any]:
    """Release ``model@version``; with ``key``, sign the pending manifest here."""
    created: dict[str, Any] = api.post(
        "/v1/releases", {"model": model, "version": version, "offline": key is not None}
    )
    if key is None:
        return created
    counter = int(created["counter"])
    try:
        envelope = Envelope.from_bytes(api.raw(f"/v1/releases/{model}/{counter}/manifest"))
        envelope.sign(key)
    except EdgefleetError as exc:
        raise RetrainError(f"cannot sign release {counter} of {model}: {exc}") from exc
    signatures = [{"keyid": s.keyid, "sig": s.sig} for s in envelope.signatures]
    attached: dict[str, Any] = api.post(
        f"/v1/releases/{model}/{counter}/signatures", {"signatures": signatures}
    )
    return attached


def list_devices(api: ControlPlane) -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = []
    after = None
    while True:
        page = api.get("/v1/devices", after=after, limit=1000)
        devices += page
        if len(page) < 1000:
            return devices
        after = page[-1]["id"]


def plan_rollout(api: ControlPlane, document: dict[str, Any]) -> dict[str, Any]:
    planned: dict[str, Any] = api.post("/v1/rollouts/plan", document)
    return planned


def create_rollout(api: ControlPlane, document: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = api.post("/v1/rollouts", document)
    return created


__all__ = [
    "CurrentRelease",
    "Fetched",
    "Pushed",
    "cohort_devices",
    "create_release",
    "create_rollout",
    "current_release",
    "fetch_captures",
    "list_devices",
    "plan_rollout",
    "push_version",
    "read_release_key",
]
