"""A real control plane for end-to-end tests: ``fleetctl serve`` under uvicorn.

Each test module gets one server per database (SQLite, PostgreSQL). It is set
up the way an operator would: ``fleetctl keys init``, ``fleetctl token create
--local`` for the first admin, then ``fleetctl serve``. Tests talk to it over
HTTP and through the ``fleetctl`` CLI as separate processes.

``fleet_server`` is the same server with a real Mosquitto broker of its own
(:mod:`tests.support.mosquitto`): the control plane keeps the broker's
password file in sync and signals it, as in production. With SQLite it
speaks MQTT 5 (shared subscriptions across its workers); with PostgreSQL it
is forced to MQTT 3.1.1, where one worker per host consumes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support import postgres
from tests.support.agent import AgentProcess
from tests.support.mosquitto import Broker, start_broker
from tests.support.net import free_port

CLI = [sys.executable, "-m", "control_plane.cli"]
#: Small enough that an "oversized upload" test is cheap.
MAX_UPLOAD_BYTES = 8 * 1024 * 1024


@dataclass
class Server:
    url: str
    data_dir: Path
    env: dict[str, str]
    admin_token: str
    log: Path

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    @property
    def admin(self) -> httpx.Client:
        return self.http(self.admin_token)

    def cli(
        self, *args: str | Path, token: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **self.env,
            "EDGEFLEET_SERVER": self.url,
            "EDGEFLEET_TOKEN": token or self.admin_token,
            "COLUMNS": "200",
        }
        done = subprocess.run(
            [*CLI, *(str(a) for a in args)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"fleetctl {args} failed ({done.returncode}):\n{done.stderr}")
        return done

    def token(self, name: str, role: str) -> str:
        response = self.admin.post("/v1/tokens", json={"name": name, "role": role})
        assert response.status_code == 201, response.text
        secret: str = response.json()["token"]
        return secret


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"fleetctl serve exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"fleetctl serve did not become healthy:\n{log.read_text()}")


@contextlib.contextmanager
def running_server(
    database: str, data: Path, extra_env: dict[str, str] | None = None
) -> Iterator[Server]:
    """``fleetctl serve`` on ``database`` (sqlite or postgresql), set up as an operator would."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_MQTT__")},
        "EDGEFLEET_DATA_DIR": str(data),
        "EDGEFLEET_HOST": "127.0.0.1",
        "EDGEFLEET_PORT": str(port),
        "EDGEFLEET_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
        "EDGEFLEET_VALIDATION__LATENCY_RUNS": "50",
        # Tests that want a broker give it (Mosquitto, or the embedded one on a free port).
        "EDGEFLEET_MQTT__EMBEDDED": "false",
        **(extra_env or {}),
    }
    env.pop("EDGEFLEET_DATABASE_URL", None)
    with contextlib.ExitStack() as stack:
        if database == "postgresql":
            postgres.require_server(postgres.server_url())
            url = stack.enter_context(postgres.throwaway_database(postgres.server_url()))
            env["EDGEFLEET_DATABASE_URL"] = url
        for args in (["keys", "init", str(data / "trust")], ["db", "upgrade"]):
            subprocess.run([*CLI, *args], env=env, capture_output=True, timeout=120, check=True)
        created = subprocess.run(
            [*CLI, "token", "create", "admin", "--role", "admin", "--local"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        log = data / "server.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([*CLI, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
        stack.callback(_stop, proc)
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc, log)
        yield Server(url, data, env, created.stdout.strip(), log)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with running_server(request.param, tmp_path_factory.mktemp("control-plane")) as started:
        yield started


@dataclass
class FleetServer:
    """A control plane and the Mosquitto broker it manages."""

    server: Server
    broker: Broker
    mqtt_password: str  # the control plane's own broker password
    protocol: int  # what the control plane is made to speak


@contextlib.contextmanager
def running_fleet_server(
    database: str, tmp_path_factory: pytest.TempPathFactory, extra_env: dict[str, str]
) -> Iterator[FleetServer]:
    """A control plane with a Mosquitto of its own; ``extra_env`` adds server settings.

    MQTT 5 on SQLite, MQTT 3.1.1 on PostgreSQL (see the module docstring).
    """
    password = secrets.token_urlsafe(24)
    broker = start_broker(tmp_path_factory.mktemp("broker"), {"control-plane": password})
    protocol = 5 if database == "sqlite" else 3
    env = {
        "EDGEFLEET_MQTT__URL": broker.url,
        "EDGEFLEET_MQTT__PASSWORD": password,
        "EDGEFLEET_MQTT__PASSWORD_FILE": str(broker.password_file),
        "EDGEFLEET_MQTT__BROKER_PID_FILE": str(broker.pid_file),
        "EDGEFLEET_MQTT__PROTOCOL": "5" if protocol == 5 else "3.1.1",
        "EDGEFLEET_MQTT__RECONNECT_MAX_S": "2",
        **extra_env,
    }
    try:
        data = tmp_path_factory.mktemp("control-plane")
        with running_server(database, data, env) as started:
            yield FleetServer(started, broker, password, protocol)
    finally:
        broker.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fleet_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetServer]:
    extra_env = {"EDGEFLEET_DESIRED_CHECK_S": "0.2"}
    with running_fleet_server(request.param, tmp_path_factory, extra_env) as started:
        yield started


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    """Agents a test starts (it appends them); each is stopped when the test ends."""
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.stop()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass(frozen=True)
class Datasets:
    calibration: Path
    eval: Path
    reference: Path
    wrong_width: Path


@pytest.fixture(scope="session")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> Datasets:
    """The sensor recipe's splits as the .npz files operators upload."""
    from models.sensor import pipeline, recipe
    from tests.conftest import TEST_SAMPLES, TEST_SEED

    out = tmp_path_factory.mktemp("datasets")
    written = pipeline.export_datasets(out, recipe.make_splits(TEST_SAMPLES, TEST_SEED))
    wrong = out / "wrong.npz"
    with wrong.open("wb") as handle:
        np.savez(handle, x=np.zeros((50, 7), dtype=np.float32))
    return Datasets(written["calibration"], written["heldout"], written["reference"], wrong)
