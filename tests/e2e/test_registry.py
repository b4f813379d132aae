"""The registry and releases end to end: real server, real database, real CLI processes."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import pytest

from control_plane.auth.service import TOKEN_CACHE_TTL  # the default the server runs with
from fleetcore.artifact import verify_stream
from fleetcore.trust import TrustedSet
from tests.conftest import CommittedModels, SensorBuild
from tests.e2e.conftest import MAX_UPLOAD_BYTES, Datasets, Server


def push(server: Server, model: Path, name: str, version: str, *extra: str | Path) -> dict:
    done = server.cli(
        "model", "push", model, "--name", name, "--version", version, "-o", "json", *extra
    )
    return json.loads(done.stdout)


def error_code(response) -> str:  # type: ignore[no-untyped-def]
    return response.json()["error"]["code"]


def test_onnx_lifecycle_with_operator_side_quantization(
    server: Server, sensor_build: SensorBuild, datasets: Datasets, tmp_path: Path
) -> None:
    version = push(
        server, sensor_build.model("float"), "sensor", "1.0.0",
        "--quantize", "int8", "--calibration-data", datasets.calibration,
        "--eval-data", datasets.eval, "--reference-data", datasets.reference,
        "--training-data", datasets.calibration,
    )  # fmt: skip
    assert version["state"] == "validated", version["reasons"]
    assert version["parent_version"] == "1.0.0-float"
    assert version["quantization"]["scheme"] == "int8-static"
    assert version["validation"]["accuracy_delta"] > -0.02
    assert version["drift_reference_sha256"]

    created = server.cli("release", "create", "sensor@1.0.0", "-o", "json")
    release = json.loads(created.stdout)
    assert release["state"] == "released" and release["counter"] == 1
    assert release["signatures"] == 1

    # A device's view: root from the server, manifest, then the artifact bytes.
    with server.http() as anonymous:
        root = anonymous.get("/v1/metadata/root").content
    with server.admin as client:
        manifest = client.get("/v1/releases/sensor/1/manifest").content
        verified = TrustedSet(root).verify_release(manifest, datetime.now(timezone.utc)).manifest
        artifact = tmp_path / "model.onnx"
        url = f"/v1/artifacts/{verified.artifact.sha256}"
        with client.stream("GET", url) as response, artifact.open("wb") as out:
            for chunk in response.iter_bytes():
                out.write(chunk)
    with artifact.open("rb") as handle:
        verify_stream(handle, verified.artifact.length, verified.artifact.sha256)
    assert verified.drift_reference is not None
    assert len(verified.smoke_tests.vectors) >= 1

    # Provenance: training data, code version, quantization recipe, calibration data.
    shown = json.loads(server.cli("release", "show", "sensor@1.0.0", "-o", "json").stdout)
    provenance = shown["provenance"]
    assert (
        provenance["training_data_sha256"]
        == hashlib.sha256(datasets.calibration.read_bytes()).hexdigest()
    )
    assert provenance["quantization"]["calibration_sha256"] == provenance["training_data_sha256"]
    assert provenance["released_by"] == "admin"
    table = server.cli("release", "show", "sensor@1.0.0").stdout
    assert "training_data_sha256" in table and "released" in table

    # The offline half verifies what the server signed.
    (tmp_path / "m.json").write_bytes(manifest)
    (tmp_path / "root.json").write_bytes(root)
    ok = server.cli(
        "release",
        "verify",
        tmp_path / "m.json",
        artifact,
        "--root",
        tmp_path / "root.json",
        "--smoke",
    )
    assert ok.stdout.startswith("OK sensor release 1")


def test_tflite_lifecycle(server: Server, committed: CommittedModels, datasets: Datasets) -> None:
    version = push(server, committed.tflite, "sensor-tflite", "1.0.0", "--eval-data", datasets.eval,
                   "--reference-data", datasets.reference)  # fmt: skip
    assert version["state"] == "validated", version["reasons"]
    assert version["format"] == "tflite"
    release = json.loads(
        server.cli("release", "create", "sensor-tflite@1.0.0", "-o", "json").stdout
    )
    assert release["state"] == "released"


def test_gate_keeps_a_degraded_int8_model_draft(
    server: Server, sensor_build: SensorBuild, datasets: Datasets, tmp_path: Path
) -> None:
    """int8 calibrated on data far off the real distribution loses accuracy: it stays draft."""
    import numpy as np

    bad_calibration = tmp_path / "bad-calibration.npz"
    with bad_calibration.open("wb") as handle:
        np.savez(handle, x=np.full((200, 20), 1e4, dtype=np.float32))
    version = push(
        server, sensor_build.model("float"), "degraded", "1.0.0",
        "--quantize", "int8", "--calibration-data", bad_calibration, "--eval-data", datasets.eval,
    )  # fmt: skip
    assert version["state"] == "draft"
    assert any("accuracy" in reason for reason in version["reasons"]), version["reasons"]
    refused = server.cli("release", "create", "degraded@1.0.0", check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: [invalid_state]"), refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("content", [b"not a model", b"", b"\x08\x01\x12\x04junk" * 10])
def test_non_model_uploads_are_refused_and_nothing_is_stored(
    server: Server, content: bytes, tmp_path: Path
) -> None:
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(content)
    done = server.cli("model", "push", bogus, "--name", "bogus", "--version", "1", check=False)
    assert done.returncode == 1
    assert done.stderr.startswith("error: ["), done.stderr
    assert "Traceback" not in done.stderr
    with server.admin as client:
        assert client.get("/v1/models/bogus/versions").status_code == 404


def test_reference_data_that_does_not_fit_the_model(
    server: Server, sensor_build: SensorBuild, datasets: Datasets
) -> None:
    done = server.cli(
        "model", "push", sensor_build.model("int8-static"), "--name", "mismatch", "--version", "1",
        "--reference-data", datasets.wrong_width, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("error: [invalid_input]"), done.stderr
    assert "7" in done.stderr and "20" in done.stderr
    with server.admin as client:
        assert client.get("/v1/models/mismatch/versions").status_code == 404


def test_oversized_upload_is_refused(server: Server) -> None:
    with server.admin as client:
        declared = client.post(
            "/v1/artifacts", params={"kind": "onnx"}, content=b"x" * (MAX_UPLOAD_BYTES + 1)
        )
        assert declared.status_code == 413
        assert error_code(declared) == "payload_too_large"

        def stream():  # type: ignore[no-untyped-def]
            for _ in range(MAX_UPLOAD_BYTES // 65536 + 2):
                yield b"y" * 65536

        chunked = client.post("/v1/artifacts", params={"kind": "onnx"}, content=stream())
        assert chunked.status_code == 413
    leftovers = [p for p in (server.data_dir / "artifacts").rglob("*") if p.is_file()]
    assert all(p.stat().st_size <= MAX_UPLOAD_BYTES for p in leftovers)


def test_tokens_and_roles(server: Server) -> None:
    viewer = server.token("viewer-1", "viewer")
    operator = server.token("operator-1", "operator")
    with server.http() as anonymous:
        missing = anonymous.get("/v1/models")
        assert missing.status_code == 401 and error_code(missing) == "unauthenticated"
    with server.http("efo_" + "A" * 43) as wrong:
        assert wrong.get("/v1/models").status_code == 401
    with server.http(viewer) as client:
        assert client.get("/v1/models").status_code == 200
        for method, path, body in [
            ("POST", "/v1/releases", {"model": "sensor", "version": "1.0.0"}),
            ("POST", "/v1/tokens", {"name": "x", "role": "admin"}),
            ("POST", "/v1/enroll-tokens", {}),
        ]:
            response = client.request(method, path, json=body)
            assert response.status_code == 403, (path, response.text)
            assert error_code(response) == "forbidden"
        assert (
            client.post("/v1/artifacts", params={"kind": "onnx"}, content=b"abc").status_code == 403
        )
    with server.http(operator) as client:
        assert client.post("/v1/tokens", json={"name": "y", "role": "admin"}).status_code == 403
        assert client.get("/v1/tokens").status_code == 403
        enroll = client.post("/v1/enroll-tokens", json={"labels": {"site": "a"}, "max_uses": 5})
        assert enroll.status_code == 201 and enroll.json()["token"].startswith("efe_")
    # Revoked tokens stop working on every worker within the token cache's lifetime.
    server.cli("token", "revoke", "viewer-1")
    deadline = time.monotonic() + TOKEN_CACHE_TTL.total_seconds() + 3
    with server.http(viewer) as client:
        while client.get("/v1/models").status_code != 401:
            assert time.monotonic() < deadline, "a revoked token still works"
            time.sleep(0.1)
        for _ in range(20):  # and stays revoked, whichever worker answers
            assert client.get("/v1/models").status_code == 401
    listed = server.cli("token", "list", "-o", "json").stdout
    assert viewer not in listed and operator not in listed


def test_double_release_and_wrong_key_and_offline_signing(
    server: Server, sensor_build: SensorBuild, datasets: Datasets, tmp_path: Path
) -> None:
    push(
        server, sensor_build.model("int8-dynamic"), "offline", "1.0.0", "--eval-data", datasets.eval
    )
    created = json.loads(
        server.cli("release", "create", "offline@1.0.0", "--offline", "-o", "json").stdout
    )
    assert created["state"] == "pending" and created["signatures"] == 0
    twice = server.cli("release", "create", "offline@1.0.0", check=False)
    assert twice.returncode == 1 and twice.stderr.startswith("error: [conflict]"), twice.stderr

    unsigned = tmp_path / "unsigned.json"
    server.cli("release", "download", "offline@1.0.0", "-o", unsigned)
    keys = server.data_dir / "trust" / "keys"
    (director,) = keys.glob("director-*.key")
    (release_key,) = keys.glob("release-*.key")

    wrong = tmp_path / "wrong.json"
    shutil.copy(unsigned, wrong)
    server.cli("release", "sign", wrong, "--key", director)
    refused = server.cli("release", "attach-signature", "offline@1.0.0", wrong, check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: [signing]"), refused.stderr

    server.cli("release", "sign", unsigned, "--key", release_key)
    attached = server.cli("release", "attach-signature", "offline@1.0.0", unsigned)
    assert "(released)" in attached.stdout
    with server.admin as client:
        root = client.get("/v1/metadata/root").content
        manifest = client.get("/v1/releases/offline/1/manifest").content
    TrustedSet(root).verify_release(manifest, datetime.now(timezone.utc))


def test_revoke_records_the_hash_in_later_manifests(
    server: Server, sensor_build: SensorBuild, datasets: Datasets
) -> None:
    first = push(
        server, sensor_build.model("int8-static"), "revoking", "1", "--eval-data", datasets.eval
    )
    server.cli("release", "create", "revoking@1")
    revoked = server.cli("release", "revoke", "revoking@1", "--reason", "bad outputs on site b")
    assert "(revoked)" in revoked.stdout
    push(server, sensor_build.model("int8-dynamic"), "revoking", "2", "--eval-data", datasets.eval)
    server.cli("release", "create", "revoking@2")
    with server.admin as client:
        manifest = json.loads(client.get("/v1/releases/revoking/2/manifest").content)
        assert first["artifact_sha256"] in manifest["signed"]["revoked"]
        again = client.post("/v1/releases/revoking/1/revoke", json={"reason": "again"})
        assert again.status_code == 409


def test_range_downloads_resume(server: Server, sensor_build: SensorBuild) -> None:
    data = sensor_build.model("float").read_bytes()
    with server.admin as client:
        sha = client.post("/v1/artifacts", params={"kind": "onnx"}, content=data).json()["sha256"]
        cut = len(data) // 3
        head = client.get(f"/v1/artifacts/{sha}", headers={"Range": f"bytes=0-{cut - 1}"})
        assert head.status_code == 206 and len(head.content) == cut
        tail = client.get(f"/v1/artifacts/{sha}", headers={"Range": f"bytes={cut}-"})
        assert tail.status_code == 206
        assert tail.headers["content-range"] == f"bytes {cut}-{len(data) - 1}/{len(data)}"
        assert hashlib.sha256(head.content + tail.content).hexdigest() == sha
        full = client.get(f"/v1/artifacts/{sha}")
        assert full.headers["etag"] == f'"{sha}"'
        assert "immutable" in full.headers["cache-control"]
        cached = client.get(f"/v1/artifacts/{sha}", headers={"If-None-Match": f'"{sha}"'})
        assert cached.status_code == 304


def test_concurrent_pushes_of_the_same_bytes(server: Server, sensor_build: SensorBuild) -> None:
    data = sensor_build.model("int8-dynamic").read_bytes() + b"concurrent"
    sha = hashlib.sha256(data).hexdigest()

    def upload(_: int) -> int:
        with server.admin as client:
            return client.post("/v1/artifacts", params={"kind": "onnx"}, content=data).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(upload, range(16)))
    assert set(codes) <= {200, 201} and codes.count(201) <= 1
    stored = list((server.data_dir / "artifacts").rglob(sha))
    assert len(stored) == 1
    assert hashlib.sha256(stored[0].read_bytes()).hexdigest() == sha


def test_audit_entries(server: Server, sensor_build: SensorBuild, datasets: Datasets) -> None:
    push(server, sensor_build.model("int8-static"), "audited", "1", "--eval-data", datasets.eval)
    server.cli("release", "create", "audited@1")
    server.cli("release", "revoke", "audited@1", "--reason", "audit test")
    entries = json.loads(server.cli("audit", "--limit", "1000", "-o", "json").stdout)
    mine = [(e["action"], e["object_id"]) for e in entries if e["object_id"].startswith("audited")]
    assert ("model.push", "audited@1") in mine
    assert ("release.create", "audited#1") in mine
    assert ("release.revoke", "audited#1") in mine
    assert all(e["actor"] == "admin" for e in entries if e["object_id"].startswith("audited"))
    times = [datetime.fromisoformat(e["at"]) for e in entries]
    assert times == sorted(times, reverse=True), "newest first"
    assert not any("efo_" in json.dumps(e) for e in entries), "a secret reached the audit log"
