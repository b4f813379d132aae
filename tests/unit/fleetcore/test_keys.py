"""Ed25519 keys, key ids and envelopes."""

from __future__ import annotations

import pytest

from fleetcore.envelope import Envelope, pae
from fleetcore.errors import MetadataError, UnsupportedAlgorithmError
from fleetcore.keys import PrivateKey, PublicKey


def test_keyid_is_the_hash_of_the_canonical_public_key() -> None:
    key = PrivateKey.generate()
    again = PublicKey.from_dict(key.public_key.to_dict())
    assert again.keyid == key.keyid
    assert len(key.keyid) == 64


def test_signature_verifies_only_for_its_data_and_key() -> None:
    key, other = PrivateKey.generate(), PrivateKey.generate()
    sig = key.sign(b"data")
    assert key.public_key.verify(sig, b"data")
    assert not key.public_key.verify(sig, b"datA")
    assert not other.public_key.verify(sig, b"data")
    assert not key.public_key.verify(sig[:-1], b"data")


def test_pem_round_trip_plain_and_encrypted() -> None:
    key = PrivateKey.generate()
    assert PrivateKey.from_pem(key.to_pem()).keyid == key.keyid
    pem = key.to_pem(b"correct horse")
    assert PrivateKey.is_encrypted_pem(pem)
    assert PrivateKey.from_pem(pem, b"correct horse").keyid == key.keyid
    with pytest.raises(MetadataError, match="passphrase"):
        PrivateKey.from_pem(pem, b"wrong")
    with pytest.raises(MetadataError, match="encrypted"):
        PrivateKey.from_pem(pem)


@pytest.mark.parametrize(
    "obj",
    [
        {"keytype": "rsa", "scheme": "ed25519", "keyval": {"public": "00" * 32}},
        {"keytype": "ed25519", "scheme": "ecdsa-sha2-nistp256", "keyval": {"public": "00" * 32}},
    ],
)
def test_unknown_key_types_and_schemes_are_refused(obj: dict[str, object]) -> None:
    with pytest.raises(UnsupportedAlgorithmError):
        PublicKey.from_dict(obj)


@pytest.mark.parametrize(
    "obj",
    [
        {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": "00" * 31}},
        {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": "zz" * 32}},
        {"keytype": "ed25519", "scheme": "ed25519"},
        [],
    ],
)
def test_malformed_keys_are_refused(obj: object) -> None:
    with pytest.raises(MetadataError):
        PublicKey.from_dict(obj)


def test_signature_binds_the_metadata_type() -> None:
    """A signature made over an assignment does not verify the same body as a release."""
    key = PrivateKey.generate()
    envelope = Envelope({"_type": "assignment", "x": 1})
    envelope.sign(key)
    forged = Envelope({"_type": "release", "x": 1}, envelope.signatures)
    assert forged.valid_keyids([key.keyid], {key.keyid: key.public_key}) == set()
    assert envelope.valid_keyids([key.keyid], {key.keyid: key.public_key}) == {key.keyid}


def test_pae_layout() -> None:
    assert pae("t", b"body") == b"DSSEv1 1 t 4 body"


def test_too_many_signatures_are_refused() -> None:
    signatures = [{"keyid": "a", "sig": "b"}] * 33
    with pytest.raises(MetadataError, match="signatures"):
        Envelope.from_dict({"signed": {"_type": "root"}, "signatures": signatures})
