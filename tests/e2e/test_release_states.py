"""Release and version states under revocation, re-validation and concurrency."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from fleetcore.trust import TrustedSet
from tests.conftest import SensorBuild
from tests.e2e.conftest import Datasets, Server


def upload(server: Server, path: Path) -> str:
    with server.admin as client:
        response = client.post("/v1/artifacts", params={"kind": "onnx"}, content=path.read_bytes())
        assert response.status_code in (200, 201), response.text
        sha: str = response.json()["sha256"]
        return sha


def register(server: Server, model: str, version: str, sha: str) -> None:
    with server.admin as client:
        body = {"version": version, "artifact_sha256": sha}
        response = client.post(f"/v1/models/{model}/versions", json=body)
        assert response.status_code == 201, response.text
        assert response.json()["state"] == "validated"


def test_revoking_rebuilds_pending_manifests(
    server: Server, sensor_build: SensorBuild, tmp_path: Path
) -> None:
    register(server, "pending", "1", upload(server, sensor_build.model("int8-static")))
    register(server, "pending", "2", upload(server, sensor_build.model("int8-dynamic")))
    server.cli("release", "create", "pending@1")
    server.cli("release", "create", "pending@2", "--offline")
    early = tmp_path / "early.json"
    server.cli("release", "download", "pending@2", "-o", early)
    (release_key,) = (server.data_dir / "trust" / "keys").glob("release-*.key")
    server.cli("release", "sign", early, "--key", release_key)

    server.cli("release", "revoke", "pending@1", "--reason", "bad")
    # The signature over the old bytes no longer fits the rebuilt manifest ...
    stale = server.cli("release", "attach-signature", "pending@2", early, check=False)
    assert stale.returncode == 1 and stale.stderr.startswith("error: [signing]"), stale.stderr
    # ... the rebuilt one lists the revoked hash, and signs and releases fine.
    fresh = tmp_path / "fresh.json"
    server.cli("release", "download", "pending@2", "-o", fresh)
    first_sha = json.loads(server.cli("release", "show", "pending@1", "-o", "json").stdout)[
        "sha256"
    ]
    assert first_sha in json.loads(fresh.read_text())["signed"]["revoked"]
    server.cli("release", "sign", fresh, "--key", release_key)
    assert "(released)" in server.cli("release", "attach-signature", "pending@2", fresh).stdout
    with server.admin as client:
        root = client.get("/v1/metadata/root").content
        manifest = client.get("/v1/releases/pending/2/manifest").content
    TrustedSet(root).verify_release(manifest, datetime.now(timezone.utc))


def test_a_version_with_a_release_cannot_be_validated_again(
    server: Server, sensor_build: SensorBuild
) -> None:
    register(server, "frozen", "1", upload(server, sensor_build.model("int8-static")))
    server.cli("release", "create", "frozen@1", "--offline")
    done = server.cli("model", "validate", "frozen@1", check=False)
    assert done.returncode == 1 and done.stderr.startswith("error: [invalid_state]"), done.stderr
    assert "release 1" in done.stderr


def test_concurrent_releases_of_one_model_get_distinct_counters(
    server: Server, sensor_build: SensorBuild, datasets: Datasets
) -> None:
    sha = upload(server, sensor_build.model("int8-static"))
    versions = [str(i) for i in range(1, 7)]
    for version in versions:
        register(server, "busy", version, sha)

    def release(version: str) -> int:
        with server.admin as client:
            response = client.post("/v1/releases", json={"model": "busy", "version": version})
            assert response.status_code == 201, response.text
            counter: int = response.json()["counter"]
            return counter

    with ThreadPoolExecutor(max_workers=6) as pool:
        counters = sorted(pool.map(release, versions))
    assert counters == [1, 2, 3, 4, 5, 6]


def test_odd_version_names_still_make_a_valid_manifest(
    server: Server, sensor_build: SensorBuild
) -> None:
    register(server, "odd", "1..2:rc", upload(server, sensor_build.model("int8-static")))
    created = json.loads(server.cli("release", "create", "odd@1..2:rc", "-o", "json").stdout)
    assert created["state"] == "released"
    with server.admin as client:
        manifest = json.loads(client.get("/v1/releases/odd/1/manifest").content)
    assert manifest["signed"]["artifact"]["name"] == "odd-1_2_rc.onnx"


def test_deep_provenance_is_refused_before_anything_is_stored(
    server: Server, sensor_build: SensorBuild
) -> None:
    deep: dict[str, object] = {}
    cursor = deep
    for _ in range(40):
        cursor["a"] = {}
        cursor = cursor["a"]  # type: ignore[assignment]
    sha = upload(server, sensor_build.model("int8-static"))
    with server.admin as client:
        body = {"version": "1", "artifact_sha256": sha, "provenance": deep}
        response = client.post("/v1/models/deep/versions", json=body)
        assert response.status_code == 422
        assert client.get("/v1/models/deep/versions").status_code == 404
        assert client.get("/v1/releases").status_code == 200
