"""The processes of ``fleetctl demo``: a control plane, agents and device applications.

Every process is a real command (``fleetctl serve``, ``fleet-agent run``,
``python -m models.sensor.app``) started with its own log file in the demo
directory; :class:`Stack` stops them all (SIGTERM, then SIGKILL after a grace
period) however the demo ends, so a failed or interrupted demo leaves nothing
running. Nothing is imported from the agent or the model packages: the demo
drives them as a user would, through their commands and HTTP APIs.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
FLEETCTL = [sys.executable, "-m", "control_plane.cli"]
AGENT = [sys.executable, "-m", "agent"]
APP = [sys.executable, "-m", "models.sensor.app"]


class DemoError(Exception):
    """A step of the demo did not reach its goal; the message says which and where to look."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float, hint: str = "") -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout_s:.0f} s waiting for {what}{hint}")
        time.sleep(0.25)


@dataclass
class Agent:
    name: str
    site: str
    home: Path
    api_port: int
    process: subprocess.Popen[bytes] | None = None
    app: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.home / "agent.toml"

    @property
    def control(self) -> Path:
        return self.home / "drift.json"


@dataclass
class Stack:
    root: Path
    env: dict[str, str]
    url: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    agents: list[Agent] = field(default_factory=list)

    def spawn(
        self, argv: list[str], log: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            process = subprocess.Popen(  # noqa: S603 - argv lists of our own commands, no shell
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**self.env, **(env or {})},
                cwd=self.root,
            )
        self.processes.append(process)
        return process

    def fleetctl(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(  # noqa: S603 - fleetctl itself, no shell
            [*FLEETCTL, *args],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            input=stdin,
            timeout=300,
            check=False,
        )
        if check and done.returncode != 0:
            raise DemoError(
                f"fleetctl {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}"
            )
        return done

    def api(self) -> httpx.Client:
        token = json.loads(Path(self.env["EDGEFLEET_CLI_CONFIG"]).read_text())["token"]
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def get(self, path: str, **params: Any) -> Any:
        with self.api() as client:
            response = client.get(path, params=params)
        if response.status_code != 200:
            raise DemoError(f"GET {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    # -- the control plane ------------------------------------------------------------------

    def start_control_plane(self, port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.spawn([*FLEETCTL, "serve", "--port", str(port), "--workers", "1"], log)

        def healthy() -> bool | None:
            try:
                return (
                    True
                    if httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200
                    else None
                )
            except httpx.HTTPError:
                return None

        wait_for("the control plane to answer", healthy, 60, f"; see {log}")

    # -- agents -----------------------------------------------------------------------------

    def add_agent(self, name: str, site: str, enroll_token: str, agent_tables: str) -> Agent:
        home = self.root / "agents" / name
        home.mkdir(parents=True, exist_ok=True)
        agent = Agent(name, site, home, free_port())
        agent.config.write_text(
            f'server = "{self.url}"\n'
            f'data_dir = "{home / "data"}"\n'
            'transport = "auto"\n\n'
            f'[local_api]\nlisten = "127.0.0.1:{agent.api_port}"\n\n' + agent_tables
        )
        done = subprocess.run(  # noqa: S603 - fleet-agent itself, no shell
            [*AGENT, "enroll", "--server", self.url, "--config", str(agent.config),
             "--label", f"site={site}", "--label", f"name={name}"],
            env={**self.env, "EDGEFLEET_ENROLL_TOKEN": enroll_token},
            cwd=self.root, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise DemoError(f"enrolling {name} failed: {done.stderr.strip()}")
        agent.process = self.spawn(
            [*AGENT, "run", "--config", str(agent.config)], home / "agent.log"
        )
        self.agents.append(agent)
        return agent

    def start_app(self, agent: Agent, rate: float, seed: int) -> None:
        agent.control.write_text("{}")
        agent.app = self.spawn(
            [*APP, "--api", f"127.0.0.1:{agent.api_port}", "--rate", str(rate),
             "--control", str(agent.control), "--seed", str(seed)],
            agent.home / "app.log",
        )  # fmt: skip

    def drift(self, agents: list[Agent], knobs: dict[str, float]) -> None:
        for agent in agents:
            tmp = agent.control.with_suffix(".tmp")
            tmp.write_text(json.dumps(knobs))
            tmp.replace(agent.control)  # atomic: the application never reads half a file

    # -- teardown ---------------------------------------------------------------------------

    def stop(self, grace_s: float = 5.0) -> None:
        # Applications first, then agents, the control plane last: nobody loses its peer early.
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + grace_s
        for process in reversed(self.processes):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


__all__ = ["AGENT", "APP", "FLEETCTL", "Agent", "DemoError", "Stack", "free_port", "wait_for"]
