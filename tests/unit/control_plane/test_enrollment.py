"""Enrollment and device authentication on a real SQLite store with real keys.

A refused enrollment must not consume a use of its token; an accepted one
stores only hashes and returns the secrets once.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from control_plane.auth.tokens import hash_token
from control_plane.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    StateError,
)
from control_plane.mqtt.passwords import verify_password
from fleetcore import canonical
from fleetcore.keys import PrivateKey
from fleetcore.trust import TrustedSet
from tests.unit.control_plane.fleet_support import CAPABILITIES, Fleet, enrollment, make_fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return make_fleet(tmp_path, token_cache_s=60)


def token(fleet: Fleet, uses: int = 1, **labels: str) -> str:
    _, secret = fleet.services.auth.create_enroll_token(labels, uses, timedelta(hours=1), "alice")
    return secret


def uses(fleet: Fleet, secret: str) -> int:
    found = fleet.services.store.find_enroll_token(hash_token(secret))
    assert found is not None
    return found.uses


def test_enrollment_stores_hashes_and_returns_the_secrets_once(fleet: Fleet) -> None:
    key = PrivateKey.generate()
    secret = token(fleet, site="plant-7")

    enrolled = fleet.devices.enrollment.enroll(
        secret, enrollment(key, labels={"site": "x", "ring": "canary"})
    )

    device = enrolled.device
    assert device.labels == {"ring": "canary", "site": "plant-7"}
    assert device.keyid == key.keyid and device.public_key == key.public_key.public.hex()
    assert device.token_hash == hash_token(enrolled.token)
    assert verify_password(enrolled.mqtt_password, device.mqtt_password_hash)
    assert device.capabilities["onnx_opsets"] == [7, 21]
    assert enrolled.root == fleet.root and TrustedSet(enrolled.root).root.version == 1
    assert enrolled.token not in repr(enrolled) and uses(fleet, secret) == 1
    (entry,) = fleet.services.store.list_audit(object_id=device.id)
    assert entry.action == "device.enroll" and entry.actor.startswith("enroll-token:")
    assert enrolled.token not in str(entry.change)


def test_a_top_level_public_copy_must_name_the_same_key(fleet: Fleet) -> None:
    key = PrivateKey.generate()
    same = {**key.public_key.to_dict(), "public": key.public_key.public.hex()}
    other = {**key.public_key.to_dict(), "public": PrivateKey.generate().public_key.public.hex()}

    accepted = fleet.devices.enrollment.enroll(token(fleet), enrollment(key, public_key=same))
    with pytest.raises(InvalidInputError, match="different keys"):
        fleet.devices.enrollment.enroll(token(fleet), enrollment(key, public_key=other))

    assert accepted.device.keyid == key.keyid


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"signer": "other"}, "no valid signature"),
        ({"_type": "assignment"}, "expected 'enrollment'"),
        ({"labels": {"Site": "a"}}, "invalid label key"),
        ({"capabilities": {**CAPABILITIES, "ram_bytes": "lots"}}, "ram_bytes"),
        ({"hostname": "bad host"}, "hostname"),
        ({"time": "yesterday"}, "time"),
    ],
)
def test_malformed_or_forged_requests_use_nothing(
    fleet: Fleet, change: dict[str, object], message: str
) -> None:
    key = PrivateKey.generate()
    secret = token(fleet)
    signer = PrivateKey.generate() if change.pop("signer", None) else None

    with pytest.raises(InvalidInputError, match=message):
        fleet.devices.enrollment.enroll(secret, enrollment(key, signer=signer, **change))

    assert uses(fleet, secret) == 0 and fleet.services.store.list_devices() == []


def test_a_body_that_is_not_canonical_json_is_refused(fleet: Fleet) -> None:
    body = enrollment(PrivateKey.generate())
    for bad in (body[:-1], b'{"signed": {}, "signed": {}}', b"[]", canonical.encode({})):
        with pytest.raises(InvalidInputError):
            fleet.devices.enrollment.enroll(token(fleet), bad)


def test_the_same_key_enrolls_once_and_the_refusal_keeps_the_use(fleet: Fleet) -> None:
    key = PrivateKey.generate()
    fleet.devices.enrollment.enroll(token(fleet), enrollment(key))
    second = token(fleet)

    with pytest.raises(ConflictError, match="already enrolled"):
        fleet.devices.enrollment.enroll(second, enrollment(key))

    assert uses(fleet, second) == 0


def test_tokens_are_checked_first_and_counted_atomically(fleet: Fleet) -> None:
    body = enrollment(PrivateKey.generate())
    for bad in (None, "", "efe_short", "efo_" + "a" * 43, "efe_" + "a" * 43):
        with pytest.raises(AuthenticationError):
            fleet.devices.enrollment.enroll(bad, body)
    secret = token(fleet, uses=1)
    fleet.devices.enrollment.enroll(secret, body)
    with pytest.raises(StateError, match="used up"):
        fleet.devices.enrollment.enroll(secret, enrollment(PrivateKey.generate()))
    expired = token(fleet)
    fleet.clock.advance(hours=2)
    with pytest.raises(StateError, match="expired"):
        fleet.devices.enrollment.enroll(expired, enrollment(PrivateKey.generate()))


def test_without_keys_nothing_is_enrolled(fleet: Fleet) -> None:
    for path in (fleet.services.settings.keys_path / "root").iterdir():
        path.unlink()
    secret = token(fleet)
    with pytest.raises(NotFoundError):
        fleet.devices.enrollment.enroll(secret, enrollment(PrivateKey.generate()))
    assert uses(fleet, secret) == 0


def test_device_tokens_authenticate_their_own_device_until_decommissioned(fleet: Fleet) -> None:
    enrolled = fleet.devices.enrollment.enroll(token(fleet), enrollment(PrivateKey.generate()))
    auth = fleet.devices.auth

    caller = auth.authenticate(enrolled.token)
    caller.require(enrolled.device.id)
    with pytest.raises(PermissionDeniedError):
        caller.require("dev-" + "b" * 20)
    assert auth.cached(enrolled.token) == caller
    for bad in (None, "efd_nope", "efd_" + "x" * 43, enrolled.token.replace("efd_", "efo_")):
        with pytest.raises(AuthenticationError):
            auth.authenticate(bad)

    fleet.devices.devices.decommission(enrolled.device.id, "alice")

    assert auth.cached(enrolled.token) is None  # forgotten at once, cache or not
    with pytest.raises(AuthenticationError, match="decommissioned"):
        auth.authenticate(enrolled.token)
