"""A scaled-out deployment and a fleet of real agents for the rollout end-to-end tests.

Theory of operation. :func:`deployment` sets up what an operator runs beyond
one machine: a PostgreSQL database (a throwaway one, :mod:`tests.support.postgres`),
one Mosquitto broker (MQTT 5, so replicas share the reports through a shared
subscription), one data directory holding the signing keys and the artifacts,
and ``fleetctl serve`` *replicas* (:class:`Replica`) on ports of their own
behind a small TCP load balancer (:class:`Balancer`) that agents and tests
talk to. A replica runs in its own process group, so :meth:`Replica.kill9`
takes its uvicorn workers down with it, as a host that loses power would;
:meth:`Replica.start` brings it back on the same port and data directory.

:class:`Fleet` enrolls real ``fleet-agent`` processes (MQTT transport) and
starts them concurrently; :class:`Api` holds the HTTP calls the tests make.

Invariants: nothing here talks to a service the tests did not start, and a
process is only ever signalled by the id (or process group) it was started with.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from models.tiny import tiny_onnx_bytes
from tests.support import postgres
from tests.support.agent import AgentProcess
from tests.support.mosquitto import Broker, start_broker
from tests.support.net import free_port

CLI = [sys.executable, "-m", "control_plane.cli"]
#: The agents' update settings: a short probation, quick download retries.
AGENT_UPDATE = {
    "probation_s": 1.0,
    "probation_check_s": 0.2,
    "download_backoff_initial_s": 0.5,
    "download_backoff_max_s": 2.0,
    "download_attempts": 30,
}
AGENT_MQTT = {"reconnect_max_s": 2.0, "keepalive_s": 10}
#: Reports are sent again after 3 s: a dead replica's share of them is not lost for long.
AGENT_OUTBOX = {"resend_s": 3.0}


# -- the load balancer --------------------------------------------------------------------


class Balancer:
    """A TCP load balancer: each connection goes to the next replica that accepts it."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = list(backends)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._turn = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, name="balancer", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _upstream(self) -> socket.socket | None:
        with self._lock:
            order = self.backends[self._turn :] + self.backends[: self._turn]
            self._turn = (self._turn + 1) % max(len(self.backends), 1)
        for port in order:
            with contextlib.suppress(OSError):
                return socket.create_connection(("127.0.0.1", port), timeout=2)
        return None

    def _serve(self, client: socket.socket) -> None:
        upstream = self._upstream()
        if upstream is None:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._open |= {client, upstream}
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
        with self._lock:
            self._open -= {client, upstream}
        client.close()
        upstream.close()

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


# -- replicas -----------------------------------------------------------------------------


def _group_members(pgid: int) -> set[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after it.
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.add(int(entry.name))
    return found


@dataclass
class Replica:
    """One ``fleetctl serve`` (a uvicorn master and its workers), in its own process group."""

    name: str
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout_s: float = 90) -> None:
        assert not self.alive, f"{self.name} is already running"
        with self.log.open("ab") as out:
            out.write(f"--- {self.name} starts on port {self.port} ---\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                [*CLI, "serve"],
                env={**self.env, "EDGEFLEET_PORT": str(self.port)},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited at start:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not become healthy:\n{self.tail()}")

    def pids(self) -> set[int]:
        """The master and its workers (the rollout drivers' lease owners carry these pids)."""
        return set() if self.process is None else _group_members(self.process.pid)

    def kill9(self) -> None:
        """SIGKILL to the master and every worker at once: no shutdown of any kind."""
        assert self.process is not None
        pgid = self.process.pid
        os.killpg(pgid, signal.SIGKILL)
        self.process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _group_members(pgid):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}'s workers outlived kill -9")
            time.sleep(0.05)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # orphaned workers, if any
        self.process = None

    def tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def owner_pid(owner: str | None) -> int | None:
    """The worker pid inside a rollout lease owner (``<host>-<pid>-<hex>``)."""
    if not owner:
        return None
    parts = owner.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


@dataclass
class Deployment:
    root: Path
    data_dir: Path
    env: dict[str, str]
    broker: Broker
    balancer: Balancer
    admin_token: str
    replicas: list[Replica] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Where agents and operators reach the control plane: the load balancer."""
        return self.balancer.url

    def api(self, replica: Replica | None = None) -> Api:
        url = self.url if replica is None else replica.url
        return Api(httpx.Client(base_url=url, timeout=60, headers=self._auth))

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def add_replica(self, name: str) -> Replica:
        replica = Replica(name, free_port(), self.env, self.root / f"{name}.log")
        replica.start()
        self.replicas.append(replica)
        self.balancer.backends.append(replica.port)
        return replica

    def replica_of(self, owner: str | None) -> Replica | None:
        pid = owner_pid(owner)
        return next((r for r in self.replicas if pid is not None and pid in r.pids()), None)

    def logs(self) -> str:
        return "\n".join(f"== {r.name} ==\n{r.tail(4000)}" for r in self.replicas)


def _run(args: list[str], env: Mapping[str, str]) -> str:
    done = subprocess.run(
        [*CLI, *args], env=dict(env), capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"fleetctl {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


@contextlib.contextmanager
def deployment(root: Path, extra_env: Mapping[str, str] | None = None) -> Iterator[Deployment]:
    """PostgreSQL, Mosquitto and one replica (``a``) behind the balancer; more on demand."""
    postgres.require_server(postgres.server_url())
    password = secrets.token_urlsafe(24)
    with contextlib.ExitStack() as stack:
        database = stack.enter_context(postgres.throwaway_database(postgres.server_url()))
        broker = start_broker(root / "broker", {"control-plane": password})
        stack.callback(broker.stop)
        data = root / "data"
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith("EDGEFLEET_") and k != "NOTIFY_SOCKET"
            },
            "EDGEFLEET_DATA_DIR": str(data),
            "EDGEFLEET_DATABASE_URL": database,
            "EDGEFLEET_HOST": "127.0.0.1",
            "EDGEFLEET_VALIDATION__LATENCY_RUNS": "20",
            "EDGEFLEET_MQTT__URL": broker.url,
            "EDGEFLEET_MQTT__PASSWORD": password,
            "EDGEFLEET_MQTT__PASSWORD_FILE": str(broker.password_file),
            "EDGEFLEET_MQTT__BROKER_PID_FILE": str(broker.pid_file),
            "EDGEFLEET_MQTT__PROTOCOL": "5",
            "EDGEFLEET_MQTT__RECONNECT_MAX_S": "2",
            "EDGEFLEET_DESIRED_CHECK_S": "0.2",
            **(extra_env or {}),
        }
        _run(["keys", "init", str(data / "trust")], env)
        _run(["db", "upgrade"], env)
        token = _run(["token", "create", "admin", "--role", "admin", "--local"], env).strip()
        balancer = Balancer([])
        stack.callback(balancer.close)
        made = Deployment(root, data, env, broker, balancer, token)

        def stop_replicas() -> None:
            for replica in made.replicas:
                replica.stop()

        stack.callback(stop_replicas)
        made.add_replica("a")
        yield made


# -- the HTTP API -------------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    model: str
    version: str
    counter: int
    sha256: str


@dataclass
class Api:
    """The operator calls the tests make, each checking its status code."""

    client: httpx.Client

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _json(self, response: httpx.Response, *expected: int) -> Any:
        assert response.status_code in (expected or (200,)), (
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:2000]}"
        )
        return response.json()

    def release(self, model: str, version: str, seed: int) -> Release:
        """Upload the tiny model with ``seed``, register it as ``version`` and release it."""
        data = tiny_onnx_bytes(seed=seed)
        uploaded = self.client.post("/v1/artifacts", params={"kind": "onnx"}, content=data)
        sha = self._json(uploaded, 200, 201)["sha256"]
        body = {"version": version, "artifact_sha256": sha}
        self._json(self.client.post(f"/v1/models/{model}/versions", json=body), 201)
        made = self._json(
            self.client.post("/v1/releases", json={"model": model, "version": version}), 201
        )
        return Release(model, version, int(made["counter"]), sha)

    def revoke(self, release: Release, reason: str) -> dict[str, Any]:
        path = f"/v1/releases/{release.model}/{release.counter}/revoke"
        revoked: dict[str, Any] = self._json(self.client.post(path, json={"reason": reason}))
        return revoked

    def enroll_token(self, uses: int, labels: Mapping[str, str]) -> str:
        body = {"labels": dict(labels), "max_uses": uses}
        return str(self._json(self.client.post("/v1/enroll-tokens", json=body), 201)["token"])

    def assign(self, device: str, release: Release) -> int:
        body = {"model": release.model, "release": release.counter}
        answer = self.client.post(f"/v1/devices/{device}/assignment", json=body)
        return int(self._json(answer, 201)["sequence"])

    def device(self, device: str) -> dict[str, Any]:
        found: dict[str, Any] = self._json(self.client.get(f"/v1/devices/{device}"))
        return found

    def create_rollout(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        body = {"metadata": {"name": name}, "spec": dict(spec)}
        created: dict[str, Any] = self._json(self.client.post("/v1/rollouts", json=body), 201)
        return created

    def rollout(self, ref: str) -> dict[str, Any]:
        found: dict[str, Any] = self._json(self.client.get(f"/v1/rollouts/{ref}"))
        return found

    def rollouts(self, model: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._json(
            self.client.get("/v1/rollouts", params={"model": model})
        )
        return found

    def targets(self, ref: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._json(self.client.get(f"/v1/rollouts/{ref}/devices"))
        return found

    def audit(self, object_type: str, object_id: str) -> list[dict[str, Any]]:
        params: dict[str, str | int] = {
            "object_type": object_type,
            "object_id": object_id,
            "limit": 1000,
        }
        found: list[dict[str, Any]] = self._json(self.client.get("/v1/audit", params=params))
        return found

    def wait_rollout(
        self,
        ref: str,
        done: Callable[[dict[str, Any]], bool],
        *,
        timeout_s: float = 120,
        what: str = "",
        context: Callable[[], str] = lambda: "",
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        found: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                found = self.rollout(ref)
                if done(found):
                    return found
            time.sleep(0.25)
        shown = {k: found.get(k) for k in ("phase", "wave", "reason", "counts", "gates")}
        raise AssertionError(
            f"rollout {ref} never reached {what or 'the expected state'}: {shown}\n{context()}"
        )


# -- the fleet ----------------------------------------------------------------------------


@dataclass
class Member:
    agent: AgentProcess
    device_id: str
    labels: dict[str, str]

    def active(self) -> tuple[str, int] | None:
        found = self.agent.status().get("active")
        return None if found is None else (found["model"], int(found["release"]))


class Fleet:
    """Real agents enrolled against a deployment, started and stopped together."""

    def __init__(self, deployment: Deployment, root: Path) -> None:
        self.deployment = deployment
        self.root = root
        self.members: list[Member] = []

    def enroll(self, labels: list[dict[str, str]], *, parallel: int = 4) -> list[Member]:
        with self.deployment.api() as api:
            token = api.enroll_token(len(labels), {"suite": "rollouts"})

        def one(index: int) -> Member:
            agent = AgentProcess.create(
                self.root / f"agent-{index:02d}",
                server=self.deployment.url,
                transport="mqtt",
                update=AGENT_UPDATE,
                mqtt=AGENT_MQTT,
                outbox=AGENT_OUTBOX,
            )
            status = agent.enroll(token, labels=labels[index])
            return Member(agent, str(status["device_id"]), {"suite": "rollouts", **labels[index]})

        with ThreadPoolExecutor(parallel) as pool:
            made = list(pool.map(one, range(len(labels))))
        self.members += made
        return made

    def start(
        self, members: list[Member] | None = None, *, env: Mapping[str, str] | None = None
    ) -> None:
        """Start the agents at once and wait until each is connected to the broker."""
        chosen = self.members if members is None else members
        for member in chosen:
            member.agent.start(env=env)
        for member in chosen:
            member.agent.wait_for(
                lambda s: (
                    bool(s.get("running")) and (s.get("transport") or {}).get("current") == "mqtt"
                ),
                timeout_s=90,
                what="the agent to run and connect to the broker",
            )

    def restart(self, members: list[Member], *, env: Mapping[str, str] | None = None) -> None:
        for member in members:
            if member.agent.running:
                assert member.agent.terminate() == 0, member.agent.log(current=True)[-3000:]
        self.start(members, env=env)

    def stop(self) -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda m: m.agent.stop(), self.members))

    def by_id(self) -> dict[str, Member]:
        return {m.device_id: m for m in self.members}

    def wait_all(
        self,
        check: Callable[[Member, dict[str, Any]], bool],
        *,
        members: list[Member] | None = None,
        timeout_s: float = 90,
        what: str = "",
    ) -> None:
        """Wait until ``check(member, status)`` holds for every member at once."""
        chosen = self.members if members is None else members
        deadline = time.monotonic() + timeout_s
        waiting = list(chosen)
        while waiting and time.monotonic() < deadline:
            waiting = [m for m in waiting if not check(m, m.agent.status())]
            if waiting:
                time.sleep(0.2)
        if waiting:
            shown = {m.device_id: _brief(m.agent.status()) for m in waiting[:5]}
            tail = waiting[0].agent.log()[-3000:]
            raise AssertionError(
                f"{len(waiting)} agent(s) never reached {what or 'the expected state'}: "
                f"{shown}\nlog of {waiting[0].device_id}:\n{tail}"
            )


def _brief(status: dict[str, Any]) -> dict[str, Any]:
    upd = status.get("update") or {}
    return {
        "running": status.get("running"),
        "state": status.get("state"),
        "reason": status.get("reason"),
        "sequence": upd.get("assignment_sequence"),
        "active": status.get("active"),
    }


def serving(release: Release) -> Callable[[Member, dict[str, Any]], bool]:
    """The agent committed ``release`` and serves it."""

    def check(_: Member, status: dict[str, Any]) -> bool:
        active = status.get("active") or {}
        return bool(
            status.get("state") == "committed"
            and active.get("model") == release.model
            and active.get("release") == release.counter
        )

    return check


__all__ = [
    "AGENT_UPDATE",
    "Api",
    "Balancer",
    "Deployment",
    "Fleet",
    "Member",
    "Release",
    "Replica",
    "deployment",
    "owner_pid",
    "serving",
]
