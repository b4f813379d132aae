"""The director: capability matching, signed assignments a device accepts, renewal.

Assignments are verified exactly as a device does, with
:class:`fleetcore.trust.TrustedSet` pinned to the server's root.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from control_plane.devices.matching import incompatibilities
from control_plane.errors import InvalidInputError, NotFoundError, StateError
from fleetcore.envelope import Envelope
from fleetcore.errors import RevokedError
from fleetcore.metadata import ReleaseManifest
from fleetcore.protocol import Capabilities, DesiredState
from fleetcore.trust import TrustedSet, TrustState, manifest_digest
from tests.support.repo import RepoSim
from tests.unit.control_plane.fleet_support import CAPABILITIES, Fleet, make_fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return make_fleet(tmp_path)


def accepted(fleet: Fleet, device: str, *, state: TrustState | None = None) -> int:
    """The sequence of the device's desired state, after verifying it as the device would."""
    found = fleet.devices.director.desired(device)
    assert found is not None
    desired = DesiredState.decode(found[1])
    trusted = TrustedSet(fleet.root, device_id=device, state=state)
    release = trusted.verify_release(desired.manifest, fleet.clock())
    assignment = trusted.verify_assignment(desired.assignment, release, fleet.clock())
    assert assignment.sequence == found[0]
    return assignment.sequence


# -- capability matching ----------------------------------------------------------------------


def manifest(
    fmt: str = "onnx", runtime: str = "onnxruntime", opset: int | None = 17
) -> ReleaseManifest:
    base = RepoSim().manifest()
    compatibility = replace(base.compatibility, runtime=runtime, opset=opset)
    return replace(base, format=fmt, compatibility=compatibility)


def caps(**changes: Any) -> Capabilities:
    return Capabilities.from_dict({**CAPABILITIES, **changes})


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, None),
        ({"onnx_opsets": [17, 17]}, None),
        ({"onnx_opsets": [7, 16]}, "needs ONNX opset 17; the device accepts 7 to 16"),
        ({"onnx_opsets": None}, "reports no opset range"),
        ({"formats": ["tflite"]}, "runs no onnx models"),
        ({"runtimes": {"ai-edge-litert": "1.2"}}, "has no onnxruntime"),
    ],
)
def test_onnx_needs_the_format_the_runtime_and_the_opset(
    changes: dict[str, Any], reason: str | None
) -> None:
    found = incompatibilities(caps(**changes), manifest())
    if reason is None:
        assert found == []
    else:
        assert len(found) == 1 and reason in found[0]


def test_tflite_runs_on_either_tflite_interpreter() -> None:
    tflite = manifest("tflite", "tflite", None)
    for runtime in ("tflite-runtime", "ai-edge-litert"):
        assert incompatibilities(caps(runtimes={runtime: "2"}, formats=["tflite"]), tflite) == []
    both = incompatibilities(caps(), tflite)
    assert len(both) == 2 and "tflite-runtime or ai-edge-litert" in both[1]


def test_an_onnx_model_without_an_opset_needs_no_range() -> None:
    assert incompatibilities(caps(onnx_opsets=None), manifest(opset=None)) == []


# -- assignments ------------------------------------------------------------------------------


def test_an_assignment_is_signed_stored_audited_and_accepted_by_the_device(fleet: Fleet) -> None:
    counter = fleet.release("1")
    device = fleet.enroll()
    woken: list[str] = []
    fleet.devices.director.listeners.append(woken.append)

    signed = fleet.devices.director.assign(device.id, "tiny", "alice", version="1")

    assert (signed.sequence, signed.model, signed.release) == (1, "tiny", counter)
    assert signed.expires_at - signed.issued_at == timedelta(days=30)
    release = fleet.services.store.get_release("tiny", counter)
    assert release is not None
    assert signed.manifest_sha256 == manifest_digest(Envelope.from_bytes(release.manifest).signed)
    assert accepted(fleet, device.id) == 1
    assert woken == [device.id]
    (entry,) = fleet.services.store.list_audit(object_id=device.id, actor="alice")
    assert entry.action == "device.assign" and entry.change["sequence"] == 1


def test_assigning_again_takes_the_next_sequence_and_a_replay_is_refused(fleet: Fleet) -> None:
    counter = fleet.release("1")
    device = fleet.enroll()
    director = fleet.devices.director
    first = director.assign(device.id, "tiny", "alice", release=counter)
    state = TrustState()
    assert accepted(fleet, device.id, state=state) == 1

    second = director.assign(device.id, "tiny", "alice", release=counter)

    assert second.sequence == first.sequence + 1
    assert accepted(fleet, device.id, state=state) == 2
    trusted = TrustedSet(fleet.root, device_id=device.id, state=state)
    manifest_bytes = DesiredState.decode(director.document(first)).manifest
    verified = trusted.verify_release(manifest_bytes, fleet.clock())
    with pytest.raises(Exception, match="not above"):
        trusted.verify_assignment(first.envelope, verified, fleet.clock())


def test_assignments_carry_the_models_revoked_hashes(fleet: Fleet) -> None:
    fleet.release("1", seed=1)
    good = fleet.release("2", seed=2)
    device = fleet.enroll()
    bad = fleet.services.releases.revoke("tiny", 1, "wrong outputs", "alice")
    fleet.devices.director.assign(device.id, "tiny", "alice", release=good)

    found = fleet.devices.director.desired(device.id)
    assert found is not None
    signed = Envelope.from_bytes(DesiredState.decode(found[1]).assignment).signed
    version = fleet.services.store.get_version_by_id(bad.version_id)
    assert version is not None and signed["revoked"] == [version.artifact_sha256]


@pytest.mark.parametrize(
    ("setup", "error", "message"),
    [
        ("pending", StateError, "pending"),
        ("revoked", StateError, "revoked"),
        ("missing", NotFoundError, "no release"),
        ("gone", StateError, "decommissioned"),
        ("unknown", NotFoundError, "no device"),
        ("incapable", InvalidInputError, "cannot run tiny release 1: the model needs ONNX opset"),
    ],
)
def test_refused_assignments_change_nothing(
    fleet: Fleet, setup: str, error: type[Exception], message: str
) -> None:
    services = fleet.services
    if setup == "pending":
        fleet_version(fleet)
        services.releases.create("tiny", "1", "alice", offline=True)
    else:
        fleet.release("1")
    if setup == "revoked":
        services.releases.revoke("tiny", 1, "bad", "alice")
    device = fleet.enroll(
        {**CAPABILITIES, "onnx_opsets": [7, 12]} if setup == "incapable" else None
    )
    if setup == "gone":
        fleet.devices.devices.decommission(device.id, "alice")
    target = "dev-" + "z" * 20 if setup == "unknown" else device.id
    counter = 5 if setup == "missing" else 1

    with pytest.raises(error, match=message):
        fleet.devices.director.assign(target, "tiny", "alice", release=counter)

    assert services.store.latest_assignment(device.id) is None
    stored = services.store.get_device(device.id)
    assert stored is not None and stored.desired_sequence == 0


def fleet_version(fleet: Fleet) -> None:
    """Register tiny@1 without releasing it."""
    from control_plane.registry.service import VersionRequest
    from control_plane.store import ArtifactRecord
    from models.tiny import tiny_onnx_bytes

    svc = fleet.services
    source = svc.settings.data_dir / "tiny.onnx"
    source.write_bytes(tiny_onnx_bytes())
    blob = svc.artifacts.put_file(source, max_bytes=1 << 20)
    svc.store.add_artifact(ArtifactRecord(blob.sha256, blob.length, "onnx", fleet.clock()))
    svc.registry.create_version(VersionRequest("tiny", "1", blob.sha256), "alice")


def test_naming_both_or_neither_of_version_and_counter_is_refused(fleet: Fleet) -> None:
    device = fleet.enroll()
    with pytest.raises(InvalidInputError):
        fleet.devices.director.assign(device.id, "tiny", "alice")
    with pytest.raises(InvalidInputError):
        fleet.devices.director.assign(device.id, "tiny", "alice", version="1", release=1)


# -- renewal ----------------------------------------------------------------------------------


def test_assignments_are_renewed_once_less_than_half_their_lifetime_is_left(fleet: Fleet) -> None:
    counter = fleet.release("1")
    device = fleet.enroll()
    director = fleet.devices.director
    first = director.assign(device.id, "tiny", "alice", release=counter)

    fleet.clock.advance(days=14)
    assert director.renew_due() == []
    fleet.clock.advance(days=2)
    (renewed,) = director.renew_due()

    assert renewed.sequence == first.sequence + 1 and renewed.created_by == "director"
    assert renewed.expires_at == fleet.clock() + timedelta(days=30)
    assert (renewed.model, renewed.release) == (first.model, first.release)
    assert director.renew_due() == []  # the new one is young
    assert accepted(fleet, device.id) == renewed.sequence


def test_renewal_stops_at_the_manifests_expiry_and_for_revoked_releases(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, release_expires_days=20)
    counter = fleet.release("1")
    capped, revoked = fleet.enroll(), fleet.enroll()
    director = fleet.devices.director
    first = director.assign(capped.id, "tiny", "alice", release=counter)
    director.assign(revoked.id, "tiny", "alice", release=counter)
    release = fleet.services.store.get_release("tiny", counter)
    assert release is not None
    expires = ReleaseManifest.from_dict(Envelope.from_bytes(release.manifest).signed).expires
    assert first.expires_at == expires  # never past the manifest

    fleet.clock.advance(days=16)
    assert director.renew_due() == []  # renewing cannot reach further than the manifest
    fleet.services.releases.revoke("tiny", counter, "bad", "alice")
    fleet.clock.advance(days=1)
    assert director.renew_due() == []
    latest = fleet.services.store.latest_assignment(revoked.id)
    assert latest is not None and latest.sequence == 1


def test_a_renewal_loses_to_an_assignment_made_meanwhile(fleet: Fleet) -> None:
    counter = fleet.release("1")
    device = fleet.enroll()
    director = fleet.devices.director
    director.assign(device.id, "tiny", "alice", release=counter)
    fleet.clock.advance(days=20)
    due = fleet.services.store.assignments_expiring(fleet.clock() + timedelta(days=15))
    director.assign(device.id, "tiny", "alice", release=counter)  # sequence 2, fresh

    store = fleet.services.store
    original = store.assignments_expiring
    store.assignments_expiring = lambda before, limit=500: due  # type: ignore[method-assign]
    try:
        assert director.renew_due() == []
    finally:
        store.assignments_expiring = original  # type: ignore[method-assign]
    latest = store.latest_assignment(device.id)
    assert latest is not None and latest.sequence == 2


def test_a_revoked_artifact_cannot_be_installed_from_an_old_desired_state(fleet: Fleet) -> None:
    counter = fleet.release("1")
    device = fleet.enroll()
    director = fleet.devices.director
    director.assign(device.id, "tiny", "alice", release=counter)
    old = director.desired(device.id)
    assert old is not None
    fleet.services.releases.revoke("tiny", counter, "bad", "alice")
    fleet.release("2", seed=3)
    director.assign(device.id, "tiny", "alice", version="2")
    state = TrustState()
    accepted(fleet, device.id, state=state)  # learns the revocation

    stale = DesiredState.decode(old[1])
    trusted = TrustedSet(fleet.root, device_id=device.id, state=state)
    with pytest.raises(RevokedError):
        trusted.verify_release(stale.manifest, fleet.clock())


def test_desired_documents_are_cached_per_sequence(fleet: Fleet) -> None:
    counter = fleet.release("1")
    device = fleet.enroll()
    director = fleet.devices.director
    assert director.desired(device.id) is None
    signed = director.assign(device.id, "tiny", "alice", release=counter)
    assert director.document(signed) is director.document(signed)
    now: datetime = fleet.clock()
    assert signed.issued_at == now
