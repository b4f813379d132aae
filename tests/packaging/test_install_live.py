"""install.sh end to end: install into a prefix, enroll against a real control plane, update.

The installed virtualenv (built offline from the session's wheelhouse) runs
its own ``fleet-agent``: enrollment goes to a real ``fleetctl serve``, the
agent starts from the configuration the installer wrote, and an assigned
release reaches ``committed``, so the installer's output is proven to be a
working agent, not only a set of files.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.tiny import tiny_onnx_bytes
from tests.e2e.conftest import Server, running_server
from tests.packaging.support import run_install


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server("sqlite", tmp_path_factory.mktemp("control-plane")) as started:
        yield started


@pytest.mark.slow
def test_installed_agent_enrolls_and_commits_an_assigned_release(
    tmp_path: Path, wheelhouse: Path, server: Server
) -> None:
    with server.admin as client:
        sha = client.post(
            "/v1/artifacts", params={"kind": "onnx"}, content=tiny_onnx_bytes(seed=11)
        ).json()["sha256"]
        client.post(
            "/v1/models/installed/versions", json={"version": "1", "artifact_sha256": sha}
        ).raise_for_status()
        token = client.post("/v1/enroll-tokens", json={"labels": {"via": "installer"}}).json()[
            "token"
        ]
    server.cli("release", "create", "installed@1")

    prefix = tmp_path / "root"
    done = run_install(
        *("--prefix", prefix, "--no-start", "--python", sys.executable),
        *("--server", server.url, "--label", "hw=ci"),
        # the root from the "install bundle": the server's must chain from it
        *("--root", server.data_dir / "trust" / "root" / "1.root.json"),
        *("--pip-args", f"--no-index --find-links {wheelhouse}"),
        env={"EDGEFLEET_ENROLL_TOKEN": token},
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert token not in done.stdout + done.stderr
    config = prefix / "etc/edgefleet/agent.toml"
    agent = prefix / "opt/edgefleet/venv/bin/fleet-agent"
    status = json.loads(
        subprocess.run(
            [agent, "status", "--config", config, "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    device = status["device_id"]
    with server.admin as client:
        shown = client.get(f"/v1/devices/{device}").json()
    assert shown["labels"] == {"hw": "ci", "via": "installer"}

    # Run it the way the unit does, with a short probation. The server has no
    # broker (enrollment said so), so the agent's "auto" transport uses HTTP.
    text = config.read_text()
    config.write_text(text + "\n[update]\nprobation_s = 1.0\nprobation_check_s = 0.2\n")
    log = (tmp_path / "agent.log").open("wb")
    process = subprocess.Popen([agent, "run", "--config", config], stdout=log, stderr=log)
    try:
        server.cli("device", "assign", device, "installed@1")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with server.admin as client:
                shown = client.get(f"/v1/devices/{device}").json()
            if shown["state"] == "committed":
                break
            assert process.poll() is None, (tmp_path / "agent.log").read_text()
            time.sleep(0.2)
        assert shown["state"] == "committed", (tmp_path / "agent.log").read_text()
        assert shown["current"]["model"] == "installed"
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
        log.close()
