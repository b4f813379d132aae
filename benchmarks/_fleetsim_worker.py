"""One simulator process: enroll a share of the fleet over HTTP, then run it over MQTT.

Theory of operation: :func:`main` runs in a child process (``multiprocessing``
``spawn``) and talks to :class:`benchmarks.fleetsim.Fleet` over a pipe.

1. **Enrollment** goes through the real ``POST /v1/enroll``, as
   ``agent.enroll`` does it (:mod:`benchmarks._fleetsim_enroll`), up to
   ``enroll_concurrency`` requests at a time per process.
2. **Running**, once the parent says ``connect`` (after every process
   enrolled, and the broker knows the devices): every device except the
   ``offline`` ones gets a
   :class:`~benchmarks._fleetsim_mqtt.Session`; a desired-state message goes
   to its :class:`~benchmarks._fleetsim_device.SimDevice`, whose plan this
   module carries out with timers: reports are encoded and published, the
   download is fetched, a ``flap`` device's connection is dropped.
3. **Artifacts** are fetched with the device's own token from
   ``GET /v1/artifacts/{sha256}``, read up to the signed length and checked
   against the signed SHA-256, but only once per process and digest: the
   bytes are then kept in memory and every later device of this process is
   served from there. That models a site cache or a CDN in front of the
   control plane; the control plane serving 10,000 identical downloads is
   what ``benchmarks.serve`` measures. Downloads run on a small thread pool,
   so the event loop never waits for HTTP.
4. **Snapshots** (counters, devices per state, commits per release, CPU time
   of this process) go to the parent every ``snapshot_s``; the parent's
   commands (``stop``, ``details``) arrive on the same pipe, which the event
   loop watches.

Desired-state payloads that start with :data:`BASELINE_PREFIX` are not
desired states: they are the broker-only baseline of ``benchmarks.rollout``
and are counted (with the time the last one arrived), never verified.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

import httpx

from benchmarks._fleetsim_device import Action, Behaviour, Plan, SimDevice, Timing
from benchmarks._fleetsim_enroll import EnrollError, Identity, enroll_all
from benchmarks._fleetsim_mqtt import Connector, Loop, Session, SessionStats
from fleetcore.metadata import ArtifactInfo
from fleetcore.protocol import StatusReport

BASELINE_PREFIX = b"fleetsim-baseline:"


@dataclass(frozen=True)
class WorkerConfig:
    index: int
    server_url: str
    enroll_token: str
    behaviours: list[str]  # one per device of this worker
    labels: list[dict[str, str]]  # one per device
    broker_url: str | None = None  # None: the URL the enrollment answer names
    timing: Timing = field(default_factory=Timing)
    enroll_concurrency: int = 4
    connect_window: int = 64
    keepalive_s: int = 60
    snapshot_s: float = 0.25


# -- artifacts -------------------------------------------------------------------------------


class ArtifactCache:
    """Checked artifact bytes, fetched once per process and digest (see the module docstring)."""

    def __init__(self, server_url: str, loop: Loop) -> None:
        self.server_url, self.loop = server_url, loop
        self.blobs: dict[str, bytes] = {}
        self.waiting: dict[str, list[Callable[[str | None], None]]] = {}
        self.pool = ThreadPoolExecutor(2)
        self.downloads = self.download_bytes = self.hits = 0

    def fetch(self, artifact: ArtifactInfo, token: str, done: Callable[[str | None], None]) -> None:
        """Call ``done(None)`` once the bytes are here and checked, ``done(error)`` if not."""
        blob = self.blobs.get(artifact.sha256)
        if blob is not None:
            self.hits += 1
            done(None if len(blob) == artifact.length else "cached length differs")
            return
        waiting = self.waiting.setdefault(artifact.sha256, [])
        waiting.append(done)
        if len(waiting) == 1:
            self.pool.submit(self._download, artifact, token)

    def _download(self, artifact: ArtifactInfo, token: str) -> None:
        url = f"{self.server_url}/v1/artifacts/{artifact.sha256}"
        error: str | None = None
        data = bytearray()
        try:
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.stream("GET", url, headers=headers, timeout=120) as response:
                if response.status_code != 200:
                    raise OSError(f"HTTP {response.status_code}")
                for chunk in response.iter_bytes(1 << 16):
                    data += chunk
                    if len(data) > artifact.length:  # never read past the signed length
                        raise OSError("longer than its signed length")
            if len(data) != artifact.length:
                raise OSError(f"{len(data)} bytes, signed {artifact.length}")
            if hashlib.sha256(data).hexdigest() != artifact.sha256:
                raise OSError("sha256 differs from the signed one")
        except (OSError, httpx.HTTPError) as exc:
            error = f"download of {artifact.sha256[:16]}…: {exc}"
        self.loop.call_soon_threadsafe(lambda: self._finish(artifact.sha256, bytes(data), error))

    def _finish(self, sha: str, data: bytes, error: str | None) -> None:
        if error is None:
            self.blobs[sha] = data
            self.downloads += 1
            self.download_bytes += len(data)
        for done in self.waiting.pop(sha, []):
            done(error)


# -- the worker -------------------------------------------------------------------------------


@dataclass
class Device:
    sim: SimDevice
    identity: Identity
    session: Session | None = None
    baseline: int = 0  # baseline messages received


class Worker:
    def __init__(self, config: WorkerConfig, conn: Connection, identities: list[Identity]):
        self.config, self.conn = config, conn
        self.loop = Loop()
        self.connector = Connector(config.connect_window)
        self.stats = SessionStats()
        self.cache = ArtifactCache(config.server_url, self.loop)
        self.verdicts: Counter[str] = Counter()
        self.reports = 0
        self.last_commit_wall = 0.0
        self.baseline_last_wall = 0.0
        self.desired_bytes = 0
        self.stopping = False
        self._snapshot_at = 0.0
        self.devices: list[Device] = []
        for ident in identities:
            sim = SimDevice(ident.device_id, ident.root, Behaviour(ident.behaviour), config.timing)
            self.devices.append(Device(sim, ident))
        self.loop.add_reader(conn, self._command)

    def start_sessions(self) -> None:
        for device in self.devices:
            ident = device.identity
            if device.sim.behaviour is Behaviour.OFFLINE:
                continue
            url = self.config.broker_url or ident.mqtt_url
            if url is None or ident.mqtt_password is None:
                raise EnrollError("the control plane gave no MQTT access; start it with a broker")
            parts = urlsplit(url)
            device.session = Session(
                self.loop,
                self.connector,
                device_id=ident.device_id,
                password=ident.mqtt_password,
                host=parts.hostname or "127.0.0.1",
                port=parts.port or 1883,
                on_desired=functools.partial(self._desired, device),
                stats=self.stats,
                keepalive_s=self.config.keepalive_s,
            )
            device.session.start()

    # -- desired states and plans --------------------------------------------------------

    def _desired(self, device: Device, payload: bytes) -> None:
        if not payload:
            return  # a cleared retained message
        if payload.startswith(BASELINE_PREFIX):
            device.baseline += 1
            self.baseline_last_wall = time.time()
            return
        self.desired_bytes += len(payload)
        outcome = device.sim.consider(payload)
        self.verdicts[outcome.verdict] += 1
        for report in outcome.reports:
            self._send(device, report)
        if outcome.plan is not None:
            self._next(device, outcome.plan)

    def _send(self, device: Device, report: StatusReport) -> None:
        if report.state.value == "committed":
            self.last_commit_wall = time.time()
        self.reports += 1
        if device.session is not None:
            device.session.send(report.encode())

    def _next(self, device: Device, plan: Plan) -> None:
        if plan.generation != device.sim.generation or not plan.steps:
            return
        step = plan.steps[0]
        if step.delay_s > 0:
            self.loop.call_later(step.delay_s, lambda: self._do(device, plan))
        else:
            self._do(device, plan)

    def _do(self, device: Device, plan: Plan) -> None:
        sim = device.sim
        if plan.generation != sim.generation or not plan.steps:
            return  # superseded meanwhile
        step = plan.steps.popleft()
        if step.action is Action.DOWNLOAD:
            upd = sim.update
            assert upd is not None

            def downloaded(error: str | None) -> None:
                if plan.generation != sim.generation:
                    return
                if error is not None:
                    self._send(device, sim.fail("download", error))
                    return
                self._next(device, plan)

            self.cache.fetch(upd.artifact, device.identity.token, downloaded)
            return
        assert step.state is not None
        self._send(device, sim.enter(step.state, step.reason, step.message))
        if step.action is Action.DROP and device.session is not None:
            device.session.drop(self.config.timing.flap_down_s)
        self._next(device, plan)

    # -- talking to the parent -------------------------------------------------------------

    def _command(self) -> None:
        while self.conn.poll():
            try:
                command, *_ = self.conn.recv()
            except EOFError:
                self.stopping = True
                return
            if command == "stop":
                self.stopping = True
            elif command == "details":
                self.conn.send(("details", self.details()))

    def details(self) -> list[dict[str, Any]]:
        out = []
        for device in self.devices:
            sim = device.sim
            out.append(
                {
                    "device_id": sim.id,
                    "behaviour": sim.behaviour.value,
                    "state": sim.state.value,
                    "seq": sim.seq,
                    "committed": None if sim.committed is None else sim.committed.to_dict(),
                    "active": None if sim.active is None else sim.active.to_dict(),
                    "assignment_sequence": sim.trust.assignment_sequence,
                    "connected": device.session is not None and device.session.connected,
                    "baseline": device.baseline,
                }
            )
        return out

    def snapshot(self) -> dict[str, Any]:
        states: Counter[str] = Counter()
        committed: Counter[str] = Counter()
        online = baseline = 0
        for device in self.devices:
            sim = device.sim
            states[sim.state.value] += 1
            if sim.committed is not None:
                committed[f"{sim.committed.model}@{sim.committed.release}"] += 1
            if device.session is not None and device.session.connected:
                online += 1
            baseline += device.baseline > 0
        return {
            "worker": self.config.index,
            "wall": time.time(),
            "cpu_s": time.process_time(),
            "devices": len(self.devices),
            "offline_by_design": sum(d.session is None for d in self.devices),
            "online": online,
            "states": dict(states),
            "committed": dict(committed),
            "verdicts": dict(self.verdicts),
            "reports": self.reports,
            "mqtt": asdict(self.stats),
            "downloads": self.cache.downloads,
            "download_bytes": self.cache.download_bytes,
            "cache_hits": self.cache.hits,
            "desired_bytes": self.desired_bytes,
            "last_commit_wall": self.last_commit_wall,
            "baseline_devices": baseline,
            "baseline_last_wall": self.baseline_last_wall,
        }

    def run(self) -> None:
        parent = os.getppid()
        while not self.stopping:
            self.loop.run_once(0.1)
            now = time.monotonic()
            if now >= self._snapshot_at:
                self._snapshot_at = now + self.config.snapshot_s
                self.conn.send(("snapshot", self.snapshot()))
                if os.getppid() != parent:  # the parent died: nobody will stop us
                    break
        self.loop.close()
        self.cache.pool.shutdown(wait=False, cancel_futures=True)
        self.conn.send(("stopped", self.snapshot()))


def main(conn: Connection, config: WorkerConfig) -> None:
    """The child process's entry point."""
    try:
        started = time.time()
        identities = enroll_all(config)
        conn.send(
            (
                "enrolled",
                {
                    "devices": [(i.device_id, i.behaviour) for i in identities],
                    "seconds": time.time() - started,
                },
            )
        )
        while True:  # connect only when told: the broker may not know the devices yet
            command, *_ = conn.recv()
            if command == "stop":
                conn.send(("stopped", {}))
                return
            if command == "connect":
                break
        worker = Worker(config, conn, identities)
        worker.start_sessions()
        worker.run()
    except Exception as exc:  # report it to the parent rather than die silently
        with contextlib.suppress(OSError):
            conn.send(("error", f"worker {config.index}: {type(exc).__name__}: {exc}"))
        raise


__all__ = ["BASELINE_PREFIX", "WorkerConfig", "main"]
