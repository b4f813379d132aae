"""Attack scenarios for the trusted set, as a table.

Each scenario prepares a repository and a device, then returns the one step
under test. The table says which exception that step must raise (or None),
and every failing step must leave the device's trust state exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetcore.envelope import Signature
from fleetcore.errors import (
    BelowFloorError,
    DowngradeError,
    ExpiredMetadataError,
    MetadataError,
    MismatchError,
    RevokedError,
    RollbackError,
    SignatureError,
    TrustMissingError,
    UnsupportedAlgorithmError,
)
from fleetcore.keys import PrivateKey
from fleetcore.metadata import ArtifactInfo
from fleetcore.trust import TrustedSet
from tests.support.repo import DEVICE, T0, RepoSim

NOW = T0 + timedelta(days=1)
Step = Callable[[], Any]


@dataclass
class Ctx:
    sim: RepoSim
    device: TrustedSet

    def release(self, **kwargs: Any) -> Any:
        manifest = self.sim.manifest(**kwargs)
        return self.device.verify_release(self.sim.release_bytes(manifest), NOW)


def ctx(**kwargs: Any) -> Ctx:
    sim = RepoSim.create(**kwargs)
    return Ctx(sim, TrustedSet(sim.root_bytes(), device_id=DEVICE))


# -- release manifests -------------------------------------------------------


def release_valid(c: Ctx) -> Step:
    return lambda: c.device.verify_release(c.sim.release_bytes(), NOW)


def release_unsigned(c: Ctx) -> Step:
    return lambda: c.device.verify_release(c.sim.release_bytes(signers=[]), NOW)


def release_wrong_role(c: Ctx) -> Step:
    return lambda: c.device.verify_release(c.sim.release_bytes(signers=c.sim.keys["director"]), NOW)


def release_wrong_key(c: Ctx) -> Step:
    return lambda: c.device.verify_release(
        c.sim.release_bytes(signers=[PrivateKey.generate()]), NOW
    )


def release_same_key_twice(c: Ctx) -> Step:
    """A threshold of 2 "met" by two signatures from one key."""
    c = ctx(release=2, release_threshold=2)
    key = c.sim.keys["release"][0]

    def step() -> Any:
        from fleetcore.envelope import Envelope, Signature

        envelope = Envelope.from_bytes(c.sim.release_bytes(signers=[key]))
        envelope.signatures.append(Signature(key.keyid, envelope.signatures[0].sig))
        return c.device.verify_release(envelope.to_bytes(), NOW)

    return step


def release_garbage_signature_tolerated(c: Ctx) -> Step:
    def step() -> Any:
        from fleetcore.envelope import Envelope, Signature

        envelope = Envelope.from_bytes(c.sim.release_bytes())
        keyid = c.sim.keys["release"][0].keyid
        envelope.signatures[:0] = [
            Signature(keyid, "00" * 64),
            Signature(keyid, "not hex"),
            Signature("ab" * 32, "cd" * 64),
        ]
        return c.device.verify_release(envelope.to_bytes(), NOW)

    return step


def release_tampered_after_signing(c: Ctx) -> Step:
    def step() -> Any:
        from fleetcore.envelope import Envelope

        envelope = Envelope.from_bytes(c.sim.release_bytes())
        envelope.signed["artifact"]["length"] += 1
        return c.device.verify_release(envelope.to_bytes(), NOW)

    return step


def release_expired(c: Ctx) -> Step:
    manifest = c.sim.manifest(expires=NOW - timedelta(seconds=1))
    return lambda: c.device.verify_release(c.sim.release_bytes(manifest), NOW)


def root_expired(c: Ctx) -> Step:
    device = TrustedSet(c.sim.root_bytes(expires=T0 + timedelta(hours=1)), device_id=DEVICE)
    return lambda: device.verify_release(c.sim.release_bytes(), NOW)


def clock_set_back(c: Ctx) -> Step:
    """A later signed time was seen; a clock moved back cannot revive expired metadata."""
    c.release(model="other", issued=T0 + timedelta(days=100), expires=T0 + timedelta(days=200))
    stale = c.sim.manifest(expires=T0 + timedelta(days=90))  # valid at NOW, not at T0+100d
    return lambda: c.device.verify_release(c.sim.release_bytes(stale), NOW)


def release_below_floor(c: Ctx) -> Step:
    c.release(release=5, floor=5)
    return lambda: c.release(release=4)


def release_floor_above_itself(c: Ctx) -> Step:
    return lambda: c.device.verify_release(
        c.sim.release_bytes(mutate=lambda s: s.update(floor=s["release"] + 1)), NOW
    )


def release_revoked_hash(c: Ctx) -> Step:
    bad = c.sim.manifest(release=2, data=b"bad model")
    c.release(release=3, data=b"good model", revoked=(bad.artifact.sha256,))
    return lambda: c.device.verify_release(c.sim.release_bytes(bad), NOW)


def release_unknown_hash_algorithm(c: Ctx) -> Step:
    def add_md5(signed: dict[str, Any]) -> None:
        signed["artifact"]["hashes"]["md5"] = "00" * 16

    return lambda: c.device.verify_release(c.sim.release_bytes(mutate=add_md5), NOW)


def release_given_assignment(c: Ctx) -> Step:
    a = c.sim.assignment(c.sim.manifest())
    return lambda: c.device.verify_release(c.sim.assignment_bytes(a), NOW)


def release_keeps_unknown_fields(c: Ctx) -> Step:
    def step() -> Any:
        data = c.sim.release_bytes(mutate=lambda s: s.update(x_future={"a": 1}))
        verified = c.device.verify_release(data, NOW)
        assert verified.manifest.unrecognized == {"x_future": {"a": 1}}
        assert verified.manifest.to_dict()["x_future"] == {"a": 1}
        return verified

    return step


# -- root rotation -----------------------------------------------------------


def rotate(
    c: Ctx,
    *,
    count: int = 1,
    threshold: int = 1,
    old: list[PrivateKey] | None = None,
    new_signers: list[PrivateKey] | None = None,
    version: int = 2,
) -> Step:
    """Replace the root keys; sign v2 with ``old`` keys and ``new_signers``."""
    old_keys = c.sim.keys["root"]
    c.sim.keys["root"] = [PrivateKey.generate() for _ in range(count)]
    c.sim.thresholds["root"] = threshold
    signers = (old_keys if old is None else old) + (
        c.sim.keys["root"] if new_signers is None else new_signers
    )
    data = c.sim.root_bytes(signers=signers, version=version)
    return lambda: c.device.update_root(data)


def rotation_1_of_1(c: Ctx) -> Step:
    return rotate(c)


def rotation_2_of_3(c: Ctx) -> Step:
    c = ctx(root=3, root_threshold=2)
    old = c.sim.keys["root"]
    # Keep one old key, add two new ones; old threshold and new threshold both met.
    kept = old[0]
    c.sim.keys["root"] = [kept, PrivateKey.generate(), PrivateKey.generate()]
    data = c.sim.root_bytes(signers=[kept, old[1], c.sim.keys["root"][1]], version=2)
    return lambda: c.device.update_root(data)


def rotation_2_of_3_one_old_signature(c: Ctx) -> Step:
    c = ctx(root=3, root_threshold=2)
    old = c.sim.keys["root"]
    c.sim.keys["root"] = [PrivateKey.generate() for _ in range(3)]
    data = c.sim.root_bytes(signers=[old[0], *c.sim.keys["root"]], version=2)
    return lambda: c.device.update_root(data)


def rotation_skipped_version(c: Ctx) -> Step:
    return rotate(c, version=3)


def rotation_same_version(c: Ctx) -> Step:
    return rotate(c, version=1)


def rotation_missing_old_signature(c: Ctx) -> Step:
    return rotate(c, old=[])


def rotation_missing_new_signature(c: Ctx) -> Step:
    return rotate(c, new_signers=[])


def rotated_release_key_retires_old(c: Ctx) -> Step:
    old_release = c.sim.keys["release"]
    c.sim.keys["release"] = [PrivateKey.generate()]
    c.device.update_root(c.sim.root_bytes(version=2))
    return lambda: c.device.verify_release(c.sim.release_bytes(signers=old_release), NOW)


def root_not_self_signed(c: Ctx) -> Step:
    return lambda: TrustedSet(c.sim.root_bytes(signers=[]))


def root_missing(c: Ctx) -> Step:
    return lambda: TrustedSet(None)


def root_unknown_key_type(c: Ctx) -> Step:
    def step() -> Any:
        root = c.sim.root().to_dict()
        keyid = next(iter(root["keys"]))
        root["keys"][keyid]["keytype"] = "rsa"
        return TrustedSet(c.sim.sign(root, c.sim.keys["root"]))

    return step


# -- assignments -------------------------------------------------------------


def assign(
    c: Ctx,
    *,
    release: int = 1,
    data: bytes | None = None,
    mutate: Any = None,
    signers: list[PrivateKey] | None = None,
    **assignment_kwargs: Any,
) -> Step:
    manifest = c.sim.manifest(release=release, **({"data": data} if data else {}))
    verified = c.device.verify_release(c.sim.release_bytes(manifest), NOW)
    a = c.sim.assignment(manifest, **assignment_kwargs)
    if mutate is not None:
        a = mutate(a)
    raw = c.sim.assignment_bytes(a, signers=signers)
    return lambda: c.device.verify_assignment(raw, verified, NOW)


def assignment_valid(c: Ctx) -> Step:
    return assign(c)


def assignment_other_device(c: Ctx) -> Step:
    return assign(c, device="dev-002")


def assignment_wrong_role(c: Ctx) -> Step:
    return assign(c, signers=c.sim.keys["release"])


def assignment_hash_differs(c: Ctx) -> Step:
    return assign(
        c, mutate=lambda a: replace(a, artifact=ArtifactInfo(a.artifact.length, "0" * 64))
    )


def assignment_length_differs(c: Ctx) -> Step:
    return assign(
        c,
        mutate=lambda a: replace(
            a, artifact=ArtifactInfo(a.artifact.length + 1, a.artifact.sha256)
        ),
    )


def assignment_counter_differs(c: Ctx) -> Step:
    return assign(c, mutate=lambda a: replace(a, release=a.release + 1))


def assignment_compatibility_differs(c: Ctx) -> Step:
    return assign(c, mutate=lambda a: replace(a, compatibility=replace(a.compatibility, opset=9)))


def assignment_manifest_digest_differs(c: Ctx) -> Step:
    return assign(c, mutate=lambda a: replace(a, manifest_sha256="1" * 64))


def assignment_replayed(c: Ctx) -> Step:
    first = assign(c, sequence=7)
    first()
    return assign(c, sequence=7)


def assignment_older_sequence(c: Ctx) -> Step:
    assign(c, sequence=7)()
    return assign(c, sequence=6)


def assignment_expired(c: Ctx) -> Step:
    return assign(c, expires=NOW - timedelta(minutes=1))


def assignment_revokes_its_own_hash(c: Ctx) -> Step:
    manifest = c.sim.manifest()
    return assign(c, revoked=(manifest.artifact.sha256,))


def emergency_revocation_by_director(c: Ctx) -> Step:
    """The director revokes a bad hash without the offline release key."""
    bad = c.sim.manifest(release=2, data=b"bad")
    verified_bad = c.device.verify_release(c.sim.release_bytes(bad), NOW)
    assign(c, release=1, revoked=(bad.artifact.sha256,))()
    raw = c.sim.assignment_bytes(c.sim.assignment(bad))
    return lambda: c.device.verify_assignment(raw, verified_bad, NOW)


def downgrade_never_committed(c: Ctx) -> Step:
    c.device.record_commit("sensor", 1)
    c.device.record_commit("sensor", 3)
    return assign(c, release=2, data=b"two")


def fleet_revert_to_committed(c: Ctx) -> Step:
    c.device.record_commit("sensor", 1)
    c.device.record_commit("sensor", 3)
    return assign(c, release=1)


def floor_raised_after_release_verified(c: Ctx) -> Step:
    manifest = c.sim.manifest(release=2)
    verified = c.device.verify_release(c.sim.release_bytes(manifest), NOW)
    c.release(release=3, floor=3, data=b"three")
    raw = c.sim.assignment_bytes(c.sim.assignment(manifest))
    return lambda: c.device.verify_assignment(raw, verified, NOW)


def assignment_without_device_id(c: Ctx) -> Step:
    device = TrustedSet(c.sim.root_bytes())
    manifest = c.sim.manifest()
    verified = device.verify_release(c.sim.release_bytes(manifest), NOW)
    raw = c.sim.assignment_bytes(c.sim.assignment(manifest))
    return lambda: device.verify_assignment(raw, verified, NOW)


SCENARIOS: list[tuple[Callable[[Ctx], Step], type[Exception] | None]] = [
    (release_valid, None),
    (release_unsigned, SignatureError),
    (release_wrong_role, SignatureError),
    (release_wrong_key, SignatureError),
    (release_same_key_twice, SignatureError),
    (release_garbage_signature_tolerated, None),
    (release_tampered_after_signing, SignatureError),
    (release_expired, ExpiredMetadataError),
    (root_expired, ExpiredMetadataError),
    (clock_set_back, ExpiredMetadataError),
    (release_below_floor, BelowFloorError),
    (release_floor_above_itself, MetadataError),
    (release_revoked_hash, RevokedError),
    (release_unknown_hash_algorithm, UnsupportedAlgorithmError),
    (release_given_assignment, MetadataError),
    (release_keeps_unknown_fields, None),
    (rotation_1_of_1, None),
    (rotation_2_of_3, None),
    (rotation_2_of_3_one_old_signature, SignatureError),
    (rotation_skipped_version, RollbackError),
    (rotation_same_version, RollbackError),
    (rotation_missing_old_signature, SignatureError),
    (rotation_missing_new_signature, SignatureError),
    (rotated_release_key_retires_old, SignatureError),
    (root_not_self_signed, SignatureError),
    (root_missing, TrustMissingError),
    (root_unknown_key_type, UnsupportedAlgorithmError),
    (assignment_valid, None),
    (assignment_other_device, MismatchError),
    (assignment_wrong_role, SignatureError),
    (assignment_hash_differs, MismatchError),
    (assignment_length_differs, MismatchError),
    (assignment_counter_differs, MismatchError),
    (assignment_compatibility_differs, MismatchError),
    (assignment_manifest_digest_differs, MismatchError),
    (assignment_replayed, RollbackError),
    (assignment_older_sequence, RollbackError),
    (assignment_expired, ExpiredMetadataError),
    (assignment_revokes_its_own_hash, RevokedError),
    (emergency_revocation_by_director, RevokedError),
    (downgrade_never_committed, DowngradeError),
    (fleet_revert_to_committed, None),
    (floor_raised_after_release_verified, BelowFloorError),
    (assignment_without_device_id, TrustMissingError),
]


@pytest.mark.parametrize(("scenario", "raises"), SCENARIOS, ids=[s.__name__ for s, _ in SCENARIOS])
def test_scenario(scenario: Callable[[Ctx], Step], raises: type[Exception] | None) -> None:
    c = ctx()
    step = scenario(c)
    before = c.device.state.to_dict()
    root_before = c.device.root
    if raises is None:
        step()
        return
    with pytest.raises(raises) as info:
        step()
    # The exact class, not a sibling that happens to share a base.
    assert type(info.value) is raises
    assert c.device.state.to_dict() == before, "a refused document changed the trust state"
    assert c.device.root is root_before, "a refused document changed the trusted root"


def test_accepted_documents_move_state_forward() -> None:
    c = ctx()
    bad = c.sim.manifest(release=9, data=b"bad")
    c.release(release=2, floor=2, revoked=(bad.artifact.sha256,), issued=T0 + timedelta(hours=3))
    state = c.device.state
    assert state.floors == {"sensor": 2}
    assert bad.artifact.sha256 in state.revoked
    assert state.newest_signed_time == T0 + timedelta(hours=3)
    assign(c, release=3, data=b"three", sequence=4)()
    assert state.assignment_sequence == 4


def test_state_round_trips() -> None:
    from fleetcore.trust import TrustState

    c = ctx()
    c.release(release=2, floor=1)
    c.device.record_commit("sensor", 2)
    data = c.device.state.to_dict()
    assert TrustState.from_dict(data).to_dict() == data


def test_one_line_names_the_check() -> None:
    c = ctx()
    with pytest.raises(SignatureError) as info:
        release_unsigned(c)()
    line = info.value.one_line()
    assert line.startswith("[threshold] ")
    assert "\n" not in line


THRESHOLD_SIM = RepoSim.create(release=4, release_threshold=3)
OUTSIDERS = [PrivateKey.generate() for _ in range(2)] + THRESHOLD_SIM.keys["director"]


@settings(max_examples=60, deadline=None)
@given(
    authorized=st.lists(st.integers(0, 3), max_size=8),
    outsiders=st.lists(st.integers(0, len(OUTSIDERS) - 1), max_size=3),
)
def test_threshold_is_met_exactly_by_distinct_authorized_keys(
    authorized: list[int], outsiders: list[int]
) -> None:
    """Property: accepted iff at least 3 distinct release keys signed, whatever else signed."""
    from fleetcore.envelope import Envelope

    envelope = Envelope(THRESHOLD_SIM.manifest().to_dict())
    for index in outsiders:
        envelope.sign(OUTSIDERS[index])
    for index in authorized:
        key = THRESHOLD_SIM.keys["release"][index]
        sig = key.sign(envelope.signing_input()).hex()
        envelope.signatures.append(Signature(key.keyid, sig))  # duplicates kept on purpose
    device = TrustedSet(THRESHOLD_SIM.root_bytes())
    if len(set(authorized)) >= 3:
        device.verify_release(envelope.to_bytes(), NOW)
    else:
        with pytest.raises(SignatureError):
            device.verify_release(envelope.to_bytes(), NOW)
