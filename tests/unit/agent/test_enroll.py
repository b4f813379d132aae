"""Enrollment against a fake control plane over real HTTP, and capabilities."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.capabilities import ORT_MAX_OPSET, accelerators, collect, onnx_opsets, opset_from_table
from agent.cli import app
from agent.config import AgentConfig, load_config
from agent.enroll import enroll
from agent.errors import (
    AlreadyEnrolledError,
    AuthError,
    ConfigError,
    ConflictError,
    ServerError,
    StateError,
)
from agent.identity import IDENTITY_FILE, KEY_FILE, ROOT_FILE, load_identity, load_key
from agent.lock import DataDirLock
from fleetcore.envelope import Envelope
from fleetcore.protocol import Capabilities
from tests.support.repo import RepoSim
from tests.unit.agent.fakecp import FakeControlPlane


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def cp(fakecp: FakeControlPlane) -> FakeControlPlane:
    root = RepoSim.create().root_bytes()
    fakecp.state.enroll_answer = {
        "device_id": "dev-abc123",
        "device_token": "efd_secret",
        "mqtt": {"url": "mqtt://127.0.0.1:1883", "username": "dev-abc123", "password": "mq"},
        "root": Envelope.from_bytes(root).to_dict(),
    }
    return fakecp


def run_enroll(cp: FakeControlPlane, tmp_path: Path, **kw: object) -> object:
    config = AgentConfig(data_dir=tmp_path / "data")
    return enroll(
        server=cp.url,
        token=kw.pop("token", cp.state.enroll_token),  # type: ignore[arg-type]
        labels={"site": "a"},
        config=config,
        config_path=tmp_path / "agent.toml",
        **kw,  # type: ignore[arg-type]
    )


def test_enroll_writes_identity_root_and_config(cp: FakeControlPlane, tmp_path: Path) -> None:
    run_enroll(cp, tmp_path)
    data = tmp_path / "data"
    identity = load_identity(data)
    assert identity.device_id == "dev-abc123"
    assert identity.device_token == "efd_secret"
    assert identity.mqtt is not None and identity.mqtt.password == "mq"
    assert identity.labels == {"site": "a"}
    assert mode(data / "identity") == 0o700
    assert mode(data / KEY_FILE) == 0o600
    assert mode(data / IDENTITY_FILE) == 0o600
    assert (data / ROOT_FILE).exists()
    config = load_config(tmp_path / "agent.toml")
    assert config.server == cp.url and config.data_dir == data
    assert "efd_secret" not in (tmp_path / "agent.toml").read_text()
    # What was sent: signed by the key kept on the device, with capabilities.
    request = cp.state.enrollments[0]
    signed = request["signed"]
    assert signed["_type"] == "enrollment"
    assert signed["public_key"]["public"] == load_key(data).public_key.public.hex()
    assert request["signatures"][0]["keyid"] == load_key(data).keyid
    caps = Capabilities.from_dict(signed["capabilities"])
    assert caps.formats and caps.ram_bytes > 0


def test_re_enrolling_needs_force(cp: FakeControlPlane, tmp_path: Path) -> None:
    run_enroll(cp, tmp_path)
    first_key = load_key(tmp_path / "data").keyid
    with pytest.raises(AlreadyEnrolledError, match="--force"):
        run_enroll(cp, tmp_path)
    run_enroll(cp, tmp_path, force=True)
    assert load_key(tmp_path / "data").keyid != first_key


def test_enrolling_while_the_agent_runs_is_refused(cp: FakeControlPlane, tmp_path: Path) -> None:
    run_enroll(cp, tmp_path)
    with DataDirLock(tmp_path / "data"), pytest.raises(StateError, match="stop"):
        run_enroll(cp, tmp_path, force=True)


def test_refused_token(cp: FakeControlPlane, tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="enroll-token create"):
        run_enroll(cp, tmp_path, token="efe_wrong")
    assert not (tmp_path / "data" / IDENTITY_FILE).exists()


def test_conflict(cp: FakeControlPlane, tmp_path: Path) -> None:
    cp.state.enroll_status = 409
    with pytest.raises(ConflictError, match="duplicate"):
        run_enroll(cp, tmp_path)


def test_unreachable_server(tmp_path: Path) -> None:
    from agent.errors import TransportError

    with pytest.raises(TransportError, match="cannot reach"):
        enroll(
            server="http://127.0.0.1:9",
            token="efe_x",
            labels={},
            config=AgentConfig(data_dir=tmp_path / "data"),
            config_path=tmp_path / "agent.toml",
        )


def test_a_root_that_is_not_self_signed_is_refused(cp: FakeControlPlane, tmp_path: Path) -> None:
    sim = RepoSim.create()
    forged = sim.root_bytes(signers=RepoSim.create().keys["root"])
    cp.state.enroll_answer["root"] = Envelope.from_bytes(forged).to_dict()  # type: ignore[index]
    with pytest.raises(ServerError, match="does not verify"):
        run_enroll(cp, tmp_path)
    assert not (tmp_path / "data" / IDENTITY_FILE).exists()


def test_cli_enroll_and_status(cp: FakeControlPlane, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["--config", str(tmp_path / "agent.toml"), "--data-dir", str(tmp_path / "data")]
    result = runner.invoke(
        app,
        ["enroll", "--server", cp.url, "--token", cp.state.enroll_token, "--label", "k=v", *args],
    )
    assert result.exit_code == 0, result.output
    assert "dev-abc123" in result.stdout
    again = runner.invoke(app, ["enroll", "--server", cp.url, "--token", "x", *args])
    assert again.exit_code == 1
    assert "--force" in again.stderr
    status = runner.invoke(app, ["status", "-o", "json", "--config", str(tmp_path / "agent.toml")])
    assert status.exit_code == 0, status.output
    facts = json.loads(status.stdout)
    assert facts["device_id"] == "dev-abc123"
    assert facts["enrolled"] and not facts["running"]
    table = runner.invoke(app, ["status", "--config", str(tmp_path / "agent.toml")])
    assert "dev-abc123" in table.stdout


def test_run_refuses_an_unenrolled_device(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--data-dir", str(tmp_path / "nothing")])
    assert result.exit_code == 78


# -- capabilities --------------------------------------------------------------------------------


def test_capabilities_describe_this_machine(tmp_path: Path) -> None:
    caps = collect(tmp_path)
    assert "onnxruntime" in caps.runtimes
    assert "onnx" in caps.formats
    assert caps.onnx_opsets is not None and caps.onnx_opsets[0] == 7
    assert caps.disk_free_bytes > 0
    assert Capabilities.from_dict(caps.to_dict()) == caps


def test_opset_table() -> None:
    assert opset_from_table("1.17.3") == 20
    assert opset_from_table("1.99.0") == ORT_MAX_OPSET[max(ORT_MAX_OPSET)]
    assert opset_from_table("0.5.0") is None
    assert opset_from_table("garbage") is None
    assert onnx_opsets(None) is None
    assert onnx_opsets("1.14.1") == (7, 18)


def test_accelerators_from_device_nodes(tmp_path: Path) -> None:
    (tmp_path / "apex_0").touch()
    (tmp_path / "dri").mkdir()
    (tmp_path / "dri" / "renderD128").touch()
    assert accelerators(tmp_path) == ("edgetpu:apex_0", "dri:renderD128")


def test_plain_http_off_this_machine_is_refused_before_anything_is_sent(
    cp: FakeControlPlane, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="https"):
        enroll(
            server="http://fleet.example.com",
            token=cp.state.enroll_token,
            labels={},
            config=AgentConfig(data_dir=tmp_path / "data"),
            config_path=tmp_path / "agent.toml",
        )
    assert cp.state.enrollments == []
    assert not (tmp_path / "data" / ROOT_FILE).exists()


def test_a_root_anchor_pins_only_a_root_that_chains_from_it(
    cp: FakeControlPlane, tmp_path: Path
) -> None:
    served = json.dumps(cp.state.enroll_answer["root"]).encode()
    run_enroll(cp, tmp_path, root_anchor=served)
    assert (tmp_path / "data" / ROOT_FILE).exists()

    # A server (or anyone in between) handing out another root is refused.
    other = RepoSim.create().root_bytes()
    with pytest.raises(ServerError, match="chains"):
        run_enroll(cp, tmp_path / "second", root_anchor=other)
    assert not (tmp_path / "second" / "data" / ROOT_FILE).exists()
