"""A real Mosquitto and a real ``fleetctl serve`` for the fleet simulator, with meters on both.

Theory of operation: :func:`running_stack` sets up what an operator would,
in a scratch directory: a Mosquitto broker configured from
``packaging/mosquitto/edgefleet.conf`` (the shipped policy) plus the
deployment lines of :mod:`tests.support.mosquitto`, with three changes for a
fleet of thousands on one host: the per-client queue limit is raised (the
control plane is one client that receives every device's reports, so a
backlog of 10,000 devices' reports must fit), ``$SYS`` counters are
published every second and readable by a ``fleetsim-monitor`` user (kept by
the control plane's password-file sync, which manages only its own and
device accounts), and per-connection logging is off. Then ``fleetctl keys
init``, ``fleetctl token create --local`` and ``fleetctl serve`` (SQLite, the
embedded defaults, the broker's password and pid files) in a session of its
own, so the CPU time and memory of the server's whole process tree (uvicorn
supervisor and workers) can be read from ``/proc``.

:class:`Stack` has the helpers the benchmarks need: an admin HTTP client, an
enrollment token, a signed release of the tiny ONNX model, CPU seconds and
resident memory of the server, CPU seconds of the broker, the broker's
``$SYS`` counters and the database's row counts and file sizes. For a bulk
enrollment the server starts without the password-file sync
(``broker_sync=False``) and :meth:`Stack.enable_broker_sync` restarts it with
the sync on; :meth:`FleetBroker.resignal` makes sure the broker reloaded.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks._harness import Processes, cli, cpu_seconds, free_port, wait_http
from models.tiny import tiny_onnx_bytes
from tests.support.mosquitto import ACL, Broker, find_mosquitto

MONITOR = "fleetsim-monitor"
#: Per client; the control plane's subscription must hold a whole fleet's backlog.
MAX_QUEUED_MESSAGES = 1_000_000
TABLES = (
    "device",
    "device_assignment",
    "device_report",
    "rollout",
    "rollout_device",
    "audit_entry",
)


@dataclass
class FleetBroker(Broker):
    """The test broker with the simulator's deployment lines (see the module docstring)."""

    def extra_lines(self) -> list[str]:
        return [
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages false",
            f"max_queued_messages {MAX_QUEUED_MESSAGES}",
            "sys_interval 1",
        ]

    def resignal(self, times: int = 2, gap_s: float = 1.0) -> None:
        """SIGHUP the broker, twice and a second apart, so at least one lands outside a reload.

        Mosquitto clears its reload flag when a reload *ends*, so a SIGHUP that
        arrives during one (the control plane's workers signal it after every
        enrollment) is lost; its log is buffered, so waiting for "Reloading
        config." in it (``Broker.reload``) does not work either.
        """
        assert self.process is not None
        for attempt in range(times):
            if attempt:
                time.sleep(gap_s)
            os.kill(self.process.pid, signal.SIGHUP)


def start_fleet_broker(directory: Path, users: dict[str, str]) -> FleetBroker:
    from control_plane.mqtt.passwords import Account, hash_password

    directory.mkdir(parents=True, exist_ok=True)
    broker = FleetBroker(directory, free_port(), find_mosquitto())
    lines = "".join(Account(u, hash_password(p)).line() for u, p in users.items())
    broker.password_file.write_text(lines)
    broker.password_file.chmod(0o640)
    shutil.copyfile(ACL, broker.acl_file)
    with broker.acl_file.open("a") as acl:
        acl.write(f"\n# The simulator's meter reads the broker's counters.\nuser {MONITOR}\n")
        acl.write("topic read $SYS/#\n")
    broker.write_config()
    broker.start()
    return broker


class SysCounters:
    """The broker's ``$SYS/broker/...`` values, as the monitor user last received them."""

    def __init__(self, broker: Broker, password: str) -> None:
        self.values: dict[str, str] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{MONITOR}-meter")
        self.client.username_pw_set(MONITOR, password)
        self.client.on_connect = lambda c, *_: c.subscribe("$SYS/broker/#", qos=0)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.values[message.topic.removeprefix("$SYS/broker/")] = message.payload.decode()

    def read(self, wait_s: float = 1.5) -> dict[str, float]:
        """Fresh numeric values (waits one ``sys_interval`` and a half)."""
        time.sleep(wait_s)
        with self._lock:
            out = {}
            for key, value in self.values.items():
                with contextlib.suppress(ValueError):
                    out[key] = float(value.split()[0])
            return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Stack:
    workdir: Path
    broker: FleetBroker
    url: str
    admin_token: str
    env: dict[str, str]  # the server's environment, without the broker-sync settings
    procs: Processes
    mqtt_password: str  # the control plane's own broker password
    meter: SysCounters
    argv: list[str]
    server: subprocess.Popen[bytes] | None = None

    @property
    def server_session(self) -> int:
        assert self.server is not None
        return self.server.pid

    def start_server(self, *, broker_sync: bool = True) -> None:
        """``fleetctl serve``; with ``broker_sync`` it keeps the broker's password file."""
        env = dict(self.env)
        if broker_sync:
            env["EDGEFLEET_MQTT__PASSWORD_FILE"] = str(self.broker.password_file)
            env["EDGEFLEET_MQTT__BROKER_PID_FILE"] = str(self.broker.pid_file)
        log = self.workdir / "control-plane.log"
        with contextlib.suppress(FileNotFoundError):  # keep the log of an earlier run
            log.rename(log.with_name(f"control-plane.{time.monotonic_ns()}.log"))
        self.server = self.procs.start(self.argv, env, log)
        wait_http(f"{self.url}/v1/health", self.server, log)

    def stop_server(self) -> None:
        server = self.server
        if server is None or server.poll() is not None:
            return
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

    def enable_broker_sync(self) -> None:
        """The end of a bulk enrollment: restart the server with the password-file sync on.

        At start-up it writes every device's line at once and SIGHUPs the
        broker (one O(N) rewrite instead of one per enrollment); the broker is
        signalled again to be sure the reload happened.
        """
        self.stop_server()
        self.start_server(broker_sync=True)
        self.broker.resignal()

    def admin(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=600)

    def enroll_token(self, uses: int) -> str:
        with self.admin() as client:
            body = {"max_uses": max(uses, 1), "expires_in_hours": 24}
            answer = client.post("/v1/enroll-tokens", json=body).raise_for_status()
            token: str = answer.json()["token"]
            return token

    def release(self, model: str, version: str, *, pad_bytes: int = 0) -> tuple[int, str]:
        """Upload, register and release the tiny ONNX model; its (counter, sha256)."""
        data = tiny_onnx_bytes(seed=int(secrets.randbelow(1 << 30)), pad_bytes=pad_bytes)
        with self.admin() as client:
            sha: str = (
                client.post("/v1/artifacts", params={"kind": "onnx"}, content=data)
                .raise_for_status()
                .json()["sha256"]
            )
            client.post(
                f"/v1/models/{model}/versions", json={"version": version, "artifact_sha256": sha}
            ).raise_for_status()
            answer = client.post("/v1/releases", json={"model": model, "version": version})
            counter = int(answer.raise_for_status().json()["counter"])
        return counter, sha

    # -- meters ------------------------------------------------------------------------

    def server_pids(self) -> list[int]:
        session = self.server_session
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == session:
                pids.append(int(stat.parent.name))
        return pids

    def server_cpu_s(self) -> float:
        return cpu_seconds(self.server_session)

    def broker_cpu_s(self) -> float:
        assert self.broker.process is not None
        fields = Path(f"/proc/{self.broker.process.pid}/stat").read_text().rsplit(")", 1)[1]
        parts = fields.split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    def server_memory_mib(self) -> tuple[float, float]:
        """(sum of VmRSS, sum of VmHWM) over the server's processes, MiB."""
        rss = hwm = 0
        for pid in self.server_pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key == "VmRSS":
                        rss += int(value.split()[0])
                    elif key == "VmHWM":
                        hwm += int(value.split()[0])
        return rss / 1024, hwm / 1024

    @contextlib.contextmanager
    def rss_sampler(self, every_s: float = 0.25) -> Iterator[list[float]]:
        """Sample the summed VmRSS of the server's processes; yields [peak MiB] (updated)."""
        peak = [0.0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], self.server_memory_mib()[0])
                stop.wait(every_s)

        thread = threading.Thread(target=sample, name="rss-sampler", daemon=True)
        thread.start()
        try:
            yield peak
        finally:
            stop.set()
            thread.join()

    def database(self) -> dict[str, Any]:
        path = self.workdir / "cp" / "edgefleet.db"
        rows = {}
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            for table in TABLES:
                rows[table] = int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
        sizes = {
            name: (path.with_name(path.name + suffix).stat().st_size
                   if path.with_name(path.name + suffix).exists() else 0)
            for name, suffix in (("db", ""), ("wal", "-wal"), ("shm", "-shm"))
        }  # fmt: skip
        return {"rows": rows, "bytes": sizes, "total_bytes": sum(sizes.values())}


@contextlib.contextmanager
def running_stack(
    workdir: Path,
    *,
    extra_env: dict[str, str] | None = None,
    workers: int | None = None,
    broker_sync: bool = True,
) -> Iterator[Stack]:
    """Broker and control plane in ``workdir``; both stopped on exit.

    ``broker_sync=False`` starts the server without the password-file sync,
    for a bulk enrollment that :meth:`Stack.enable_broker_sync` finishes.
    """
    password, monitor = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    broker = start_fleet_broker(workdir / "broker", {"control-plane": password, MONITOR: monitor})
    procs = Processes()
    meter: SysCounters | None = None
    try:
        data = workdir / "cp"
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
        env |= {
            "EDGEFLEET_DATA_DIR": str(data),
            "EDGEFLEET_HOST": "127.0.0.1",
            "EDGEFLEET_PORT": str(port),
            "EDGEFLEET_MQTT__URL": broker.url,
            "EDGEFLEET_MQTT__PASSWORD": password,
            **(extra_env or {}),
        }
        cli(env, "keys", "init", str(data / "trust"))
        token = cli(env, "token", "create", "fleetsim", "--role", "admin", "--local")
        argv = [sys.executable, "-m", "control_plane.cli", "serve"]
        if workers is not None:
            argv += ["--workers", str(workers)]
        meter = SysCounters(broker, monitor)
        url = f"http://127.0.0.1:{port}"
        stack = Stack(
            workdir, broker, url, token.splitlines()[-1], env, procs, password, meter, argv
        )
        stack.start_server(broker_sync=broker_sync)
        yield stack
    finally:
        if meter is not None:
            meter.close()
        procs.stop_all()
        broker.stop()


__all__ = ["MONITOR", "FleetBroker", "Stack", "SysCounters", "running_stack", "start_fleet_broker"]
