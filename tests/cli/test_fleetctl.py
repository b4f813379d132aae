"""fleetctl keys and release commands, end to end on real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetcore.trust import TrustedSet
from tests.cli.conftest import Fleetctl, mode


def key(keydir: Path, role: str) -> Path:
    (path,) = sorted((keydir / "keys").glob(f"{role}-*.key"))
    return path


def sign(fleetctl: Fleetctl, keydir: Path, model: Path, out: Path, *extra: str) -> Path:
    code, stdout, stderr = fleetctl(
        "release",
        "sign",
        model,
        "--name",
        "tiny",
        "--release",
        "1",
        "--key",
        key(keydir, "release"),
        "--out",
        out,
        *extra,
    )
    assert code == 0, stderr
    assert "1 signature(s)" in stdout
    return out


def test_keys_init_writes_private_keys_0600_and_a_self_signed_root(
    fleetctl: Fleetctl, tmp_path: Path
) -> None:
    code, stdout, stderr = fleetctl(
        "keys", "init", tmp_path / "t", "--root-keys", "3", "--root-threshold", "2"
    )
    assert code == 0, stderr
    assert "not encrypted" in stderr
    keys = sorted((tmp_path / "t" / "keys").glob("*.key"))
    assert len(keys) == 5
    assert all(mode(k) == 0o600 for k in keys)
    assert mode(tmp_path / "t" / "keys") == 0o700
    root = TrustedSet((tmp_path / "t" / "root" / "1.root.json").read_bytes()).root
    assert root.role("root").threshold == 2
    assert "root      2-of-3" in stdout


def test_keys_init_refuses_to_overwrite(fleetctl: Fleetctl, keydir: Path) -> None:
    code, _, stderr = fleetctl("keys", "init", keydir)
    assert code == 1
    assert "[keyring]" in stderr and "already holds keys" in stderr


def test_encrypted_keys_need_the_passphrase(
    fleetctl: Fleetctl, tmp_path: Path, tiny_onnx: Path
) -> None:
    env = {"EDGEFLEET_KEY_PASSPHRASE": "a long operator passphrase"}
    code, _, stderr = fleetctl("keys", "init", tmp_path / "t", env=env)
    assert code == 0 and "not encrypted" not in stderr
    pem = key(tmp_path / "t", "release").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in pem
    code, _, stderr = fleetctl(
        "release",
        "sign",
        tiny_onnx,
        "--name",
        "tiny",
        "--release",
        "1",
        "--key",
        key(tmp_path / "t", "release"),
        "--out",
        tmp_path / "m.json",
    )
    assert code == 1
    assert "EDGEFLEET_KEY_PASSPHRASE" in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert "a long operator passphrase" not in stderr
    code, _, stderr = fleetctl(
        "release",
        "sign",
        tiny_onnx,
        "--name",
        "tiny",
        "--release",
        "1",
        "--key",
        key(tmp_path / "t", "release"),
        "--out",
        tmp_path / "m.json",
        env=env,
    )
    assert code == 0, stderr


def test_sign_then_verify(
    fleetctl: Fleetctl, keydir: Path, tiny_onnx: Path, tmp_path: Path
) -> None:
    manifest = sign(fleetctl, keydir, tiny_onnx, tmp_path / "m.json", "--provenance", "git=abc123")
    doc = json.loads(manifest.read_text())
    signed = doc["signed"]
    assert signed["compatibility"]["opset"] == 17
    assert signed["compatibility"]["inputs"][0]["name"] == "features"
    assert len(signed["smoke_tests"]["vectors"]) == 4
    assert signed["provenance"] == {"git": "abc123"}
    code, stdout, stderr = fleetctl(
        "release", "verify", manifest, tiny_onnx, "--root", keydir / "root" / "1.root.json"
    )
    assert code == 0, stderr
    assert stdout.startswith("OK tiny release 1")


@pytest.fixture
def signed(
    fleetctl: Fleetctl, keydir: Path, tiny_onnx: Path, tmp_path: Path
) -> tuple[Path, Path, Path]:
    manifest = sign(fleetctl, keydir, tiny_onnx, tmp_path / "m.json")
    return manifest, tiny_onnx, keydir / "root" / "1.root.json"


def _tamper(path: Path, out: Path, how: str) -> Path:
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 1
    elif how == "truncate":
        data = data[:-1]
    elif how == "extend":
        data += b"\0"
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize(
    ("case", "check"),
    [
        ("artifact-flipped", "[hash]"),
        ("artifact-truncated", "[length]"),
        ("artifact-oversized", "[length]"),
        ("manifest-edited", "[threshold]"),
        ("manifest-not-json", "[format]"),
        ("manifest-missing", "[io]"),
        ("other-root", "[threshold]"),
        ("expired", "[expiry]"),
        ("root-is-a-manifest", "[format]"),
    ],
)
def test_verify_failures_print_one_line_naming_the_check(
    case: str, check: str, fleetctl: Fleetctl, signed: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    manifest, artifact, root = signed
    at: list[str] = []
    if case.startswith("artifact-"):
        artifact = _tamper(
            artifact,
            tmp_path / "bad.onnx",
            {"flipped": "flip", "truncated": "truncate", "oversized": "extend"}[case.split("-")[1]],
        )
    elif case == "manifest-edited":
        doc = json.loads(manifest.read_text())
        doc["signed"]["floor"] = 1
        manifest = tmp_path / "edited.json"
        manifest.write_text(json.dumps(doc))
    elif case == "manifest-not-json":
        manifest = tmp_path / "junk.json"
        manifest.write_bytes(b"\x00{not json")
    elif case == "manifest-missing":
        manifest = tmp_path / "nope.json"
    elif case == "other-root":
        code, _, _ = fleetctl("keys", "init", tmp_path / "other")
        root = tmp_path / "other" / "root" / "1.root.json"
    elif case == "expired":
        at = ["--at", "2099-01-01T00:00:00Z"]
    elif case == "root-is-a-manifest":
        root = manifest
    code, stdout, stderr = fleetctl("release", "verify", manifest, artifact, "--root", root, *at)
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"error: {check}"), lines[0]
    assert "Traceback" not in stderr + stdout


def test_rotation_of_the_release_key(
    fleetctl: Fleetctl, keydir: Path, tiny_onnx: Path, tmp_path: Path
) -> None:
    old_release = key(keydir, "release")
    old_bytes = old_release.read_bytes()
    code, stdout, stderr = fleetctl("keys", "rotate", keydir, "--role", "release")
    assert code == 0, stderr
    assert "wrote root v2" in stdout
    assert not old_release.exists()
    assert (keydir / "keys" / "retired" / old_release.name).read_bytes() == old_bytes
    roots = ["--root", keydir / "root" / "1.root.json", "--root", keydir / "root" / "2.root.json"]
    manifest = sign(fleetctl, keydir, tiny_onnx, tmp_path / "new.json")
    code, _, stderr = fleetctl("release", "verify", manifest, tiny_onnx, *roots)
    assert code == 0, stderr
    # A manifest signed with the retired key no longer verifies under root v2 ...
    stale = tmp_path / "stale.json"
    code, _, stderr = fleetctl(
        "release",
        "sign",
        tiny_onnx,
        "--name",
        "tiny",
        "--release",
        "1",
        "--key",
        keydir / "keys" / "retired" / old_release.name,
        "--out",
        stale,
    )
    assert code == 0, stderr
    code, _, stderr = fleetctl("release", "verify", stale, tiny_onnx, *roots)
    assert code == 1 and stderr.startswith("error: [threshold]")
    # ... but still does for a device that only knows root v1.
    code, _, _ = fleetctl(
        "release", "verify", stale, tiny_onnx, "--root", keydir / "root" / "1.root.json"
    )
    assert code == 0


def test_rotation_of_root_keys_chains(fleetctl: Fleetctl, keydir: Path) -> None:
    code, _, stderr = fleetctl(
        "keys", "rotate", keydir, "--role", "root", "--keys", "3", "--threshold", "2"
    )
    assert code == 0, stderr
    code, _, stderr = fleetctl("keys", "rotate", keydir)
    assert code == 0, stderr
    device = TrustedSet((keydir / "root" / "1.root.json").read_bytes())
    for version in (2, 3):
        device.update_root((keydir / "root" / f"{version}.root.json").read_bytes())
    assert device.root.version == 3
    assert device.root.role("root").threshold == 2
    assert len(device.root.role("root").keyids) == 3


def test_console_entry_point_has_no_traceback_on_bad_input(tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text('{"signed": {"_type": "release"}, "signatures": []}')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "control_plane.cli",
            "release",
            "verify",
            junk,
            junk,
            "--root",
            junk,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: [")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("content", "check"),
    [
        (b"this is not a model", "[runtime]"),
        (b"", "[runtime]"),
        (b"\x00\x00\x00\x00TFL3junk", "[runtime]"),
    ],
    ids=["text", "empty", "fake-tflite-header"],
)
def test_sign_refuses_a_non_model_with_one_line(
    content: bytes, check: str, fleetctl: Fleetctl, keydir: Path, tmp_path: Path
) -> None:
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(content)
    out = tmp_path / "m.json"
    code, _, stderr = fleetctl(
        "release",
        "sign",
        bogus,
        "--name",
        "x",
        "--release",
        "1",
        "--key",
        key(keydir, "release"),
        "--out",
        out,
    )
    assert code == 1
    assert stderr.startswith(f"error: {check}"), stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not out.exists(), "nothing is written when signing fails"


def test_sign_refuses_smoke_inputs_that_are_not_npy(
    fleetctl: Fleetctl, keydir: Path, tiny_onnx: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "inputs.npy"
    bad.write_bytes(b"not numpy")
    code, _, stderr = fleetctl(
        "release",
        "sign",
        tiny_onnx,
        "--name",
        "x",
        "--release",
        "1",
        "--key",
        key(keydir, "release"),
        "--smoke-inputs",
        bad,
        "--out",
        tmp_path / "m.json",
    )
    assert code == 1
    assert stderr.startswith("error: [format]"), stderr


def test_sign_uses_given_smoke_inputs(
    fleetctl: Fleetctl, keydir: Path, tiny_onnx: Path, tmp_path: Path
) -> None:
    import numpy as np

    from fleetcore.envelope import Envelope
    from fleetcore.metadata import ReleaseManifest

    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "rows.npy", rows)
    manifest = sign(
        fleetctl,
        keydir,
        tiny_onnx,
        tmp_path / "m.json",
        "--smoke-inputs",
        str(tmp_path / "rows.npy"),
    )
    parsed = ReleaseManifest.from_dict(Envelope.from_bytes(manifest.read_bytes()).signed)
    assert len(parsed.smoke_tests.vectors) == 3
    np.testing.assert_array_equal(parsed.smoke_tests.vectors[2].inputs["features"], rows[2:3])
    assert parsed.smoke_tests.vectors[0].expected["probabilities"].shape == (1, 3)


def test_verify_smoke_runs_the_signed_vectors(
    fleetctl: Fleetctl, keydir: Path, tiny_onnx: Path, tmp_path: Path
) -> None:
    manifest = sign(fleetctl, keydir, tiny_onnx, tmp_path / "m.json")
    root = keydir / "root" / "1.root.json"
    code, stdout, stderr = fleetctl(
        "release", "verify", manifest, tiny_onnx, "--root", root, "--smoke"
    )
    assert code == 0, stderr
    assert "smoke test passed (4 vectors" in stdout
    # Re-sign with expected outputs the model cannot reproduce: hash and
    # signature hold, the smoke test must not.
    from fleetcore.envelope import Envelope
    from fleetcore.keys import PrivateKey
    from fleetcore.tensors import decode_tensor, encode_tensor

    envelope = Envelope.from_bytes(manifest.read_bytes())
    vector = envelope.signed["smoke_tests"]["vectors"][0]
    vector["expected"]["probabilities"] = encode_tensor(
        decode_tensor(vector["expected"]["probabilities"]) + 0.5
    )
    envelope.signatures = []
    envelope.sign(PrivateKey.from_pem(key(keydir, "release").read_bytes()))
    bad = tmp_path / "bad-smoke.json"
    bad.write_bytes(envelope.to_bytes())
    code, _, stderr = fleetctl("release", "verify", bad, tiny_onnx, "--root", root, "--smoke")
    assert code == 1
    assert stderr.startswith("error: [smoke] onnxruntime"), stderr
    assert len(stderr.strip().splitlines()) == 1
