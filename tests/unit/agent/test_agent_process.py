"""Real ``fleet-agent run`` processes against the fake control plane: kill -9 and resume.

These exercise tests/support/agent.py the way the end-to-end fault tests use
it, with the real daemon (serving host, HTTP transport, journal, outbox) in a
separate process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetcore.envelope import Envelope
from tests.support.agent import AgentProcess
from tests.support.repo import DEVICE
from tests.unit.agent.fakecp import FakeControlPlane
from tests.unit.agent.rig import Rig

pytestmark = pytest.mark.slow


@pytest.fixture
def setup(tmp_path: Path, fakecp: FakeControlPlane) -> Iterator[tuple[Rig, AgentProcess]]:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    rig = Rig(tmp_path / "rig", fakecp)  # only for its signed metadata and artifacts
    fakecp.state.enroll_answer = {
        "device_id": DEVICE,
        "device_token": fakecp.state.device_token,
        "mqtt": None,
        "root": Envelope.from_bytes(rig.repo.root_bytes()).to_dict(),
    }
    agent = AgentProcess.create(
        tmp_path / "agent",
        server=fakecp.url,
        update={"probation_s": 1.0, "probation_check_s": 0.2, "download_backoff_initial_s": 0.1},
    )
    agent.enroll(fakecp.state.enroll_token, labels={"site": "lab"})
    try:
        yield rig, agent
    finally:
        agent.stop()


def test_enrolled_agent_installs_reports_and_stops_cleanly(
    setup: tuple[Rig, AgentProcess], fakecp: FakeControlPlane
) -> None:
    rig, agent = setup
    manifest = rig.release(1)
    fakecp.set_desired(rig.desired(manifest), '"1"')
    agent.start()
    status = agent.wait_for_state("committed")
    assert status["running"] and status["transport"]["current"] == "http"
    assert status["active"]["sha256"] == manifest.artifact.sha256
    cli = agent.status(cli=True)
    assert cli["state"] == "committed" and cli["device_id"] == DEVICE
    agent.wait_for(lambda s: s["outbox"]["depth"] == 0, what="an empty outbox")
    states = [r["state"] for r in fakecp.state.reports]
    assert states[0] == "notified" and states[-1] == "committed"
    assert [r["seq"] for r in fakecp.state.reports] == list(range(1, len(states) + 1))
    assert agent.terminate() == 0
    assert not agent.status()["running"]


@pytest.mark.parametrize("state", ["downloading", "smoke_test", "probation"])
def test_kill_9_at_a_state_then_resume(
    setup: tuple[Rig, AgentProcess], fakecp: FakeControlPlane, state: str
) -> None:
    rig, agent = setup
    manifest = rig.release(1, data=None)
    fakecp.set_desired(rig.desired(manifest), '"1"')
    agent.start(pause_at=state)
    agent.wait_paused(state)
    assert agent.status()["state"] == state
    agent.kill9()
    agent.start()
    status = agent.wait_for_state("committed")
    assert status["active"]["sha256"] == manifest.artifact.sha256
    agent.wait_for(lambda s: s["outbox"]["depth"] == 0, what="an empty outbox")
    # At-least-once: a report may arrive twice (killed between delivery and
    # acknowledgement), but a seq never names two different reports.
    by_seq: dict[int, dict[str, object]] = {}
    for report in fakecp.state.reports:
        assert by_seq.setdefault(report["seq"], report) == report, "a seq was reused"
    assert sorted(by_seq) == list(range(1, len(by_seq) + 1))
    assert [r["state"] for r in by_seq.values()].count("committed") == 1


def test_refuses_to_start_twice(setup: tuple[Rig, AgentProcess]) -> None:
    _, agent = setup
    agent.start()
    agent.wait_for(lambda s: s["running"], what="the first agent")
    second = agent.cli("run", check=False, timeout_s=60)
    assert second.returncode == 1
    assert "stop it first" in second.stderr
    assert os.environ.get("EDGEFLEET_AGENT_PAUSE_AT") is None
