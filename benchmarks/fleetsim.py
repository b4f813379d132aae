"""The fleet simulator: thousands of simulated agents, each a real MQTT client, in a few processes.

Theory of operation: :meth:`Fleet.start` splits ``n`` devices over
``workers`` OS processes (:mod:`benchmarks._fleetsim_worker`). Each process
enrolls its share through the control plane's real ``POST /v1/enroll``
(concurrently; the control plane rewrites Mosquitto's password file and
SIGHUPs the broker after each enrollment), then, once every process has
enrolled and ``on_enrolled`` has run (see :meth:`Fleet.start` on making sure
the broker reloaded; devices it still refuses retry), drives one real paho client
per device from a single ``epoll`` loop (:mod:`benchmarks._fleetsim_mqtt`):
its own credential and client id, a persistent MQTT 5 session, a retained
last will on ``presence``, QoS 1 everywhere. A device verifies every desired
state with :class:`fleetcore.trust.TrustedSet` and its own trust state,
fetches the artifact by SHA-256 with its own device token (once per process
and digest: see the worker's docstring on the cache) and reports the agent's
workflow states with increasing ``seq`` (:mod:`benchmarks._fleetsim_device`).

Behaviours, chosen per device by fraction or count (:class:`Group`) and
visible as the label ``fleetsim.behaviour``: ``success``, ``slow``,
``smoke_fail``, ``offline``, ``flap``. A revert to a release the device
committed before commits at once.

Processes report snapshots over pipes; :meth:`Fleet.snapshot` merges the
newest of each, :meth:`Fleet.wait_for` waits for a condition on them. Use it
from code::

    with Fleet.start(1000, server_url, enroll_token, "success=0.95,smoke_fail=0.05") as fleet:
        ...  # create a rollout
        fleet.wait_for(lambda s: s.committed("sensor", 2) >= 950, timeout_s=300)

or from the shell (``--local-stack`` starts Mosquitto and ``fleetctl serve``
in a temporary directory first)::

    python -m benchmarks.fleetsim --local-stack --devices 200 --mix success=0.9,flap=0.1

Prints one JSON snapshot line per ``--every-s`` on stdout; progress on stderr.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from types import TracebackType
from typing import Any

from benchmarks._fleetsim_device import Behaviour, Timing
from benchmarks._fleetsim_worker import WorkerConfig, main

DEFAULT_WORKERS = 4


def say(message: str) -> None:
    print(f"[fleetsim] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Group:
    """Devices of one behaviour: a ``fraction`` of the fleet or a ``count``, with extra labels."""

    behaviour: str
    fraction: float | None = None
    count: int | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Behaviour(self.behaviour)  # ValueError names an unknown behaviour
        if (self.fraction is None) == (self.count is None):
            raise ValueError("a group needs a fraction or a count, not both")


Behaviours = str | dict[str, float] | Sequence[Group]


def parse_mix(mix: Behaviours) -> list[Group]:
    """``"success=0.9,flap=0.1"``, ``{"success": 0.9, ...}`` or groups, as groups."""
    if isinstance(mix, str):
        pairs = [p.partition("=") for p in mix.split(",") if p.strip()]
        mix = {name.strip(): float(value or 1) for name, _, value in pairs}
    if isinstance(mix, dict):
        return [Group(name, fraction=share) for name, share in mix.items()]
    return list(mix)


def plan_devices(n: int, groups: list[Group], seed: int = 0) -> list[tuple[str, dict[str, str]]]:
    """Each device's behaviour and labels: counts first, then fractions by largest remainder."""
    counted = [(g, g.count or 0) for g in groups if g.count is not None]
    rest = n - sum(c for _, c in counted)
    shares = [g for g in groups if g.fraction is not None]
    total = sum(g.fraction or 0 for g in shares) or 1.0
    exact = [(g, rest * (g.fraction or 0) / total) for g in shares]
    floors = [(g, int(x)) for g, x in exact]
    left = rest - sum(c for _, c in floors) if shares else 0
    by_remainder = sorted(range(len(exact)), key=lambda i: exact[i][1] - floors[i][1], reverse=True)
    for i in by_remainder[:left]:
        floors[i] = (floors[i][0], floors[i][1] + 1)
    devices = [(g.behaviour, dict(g.labels)) for g, c in counted + floors for _ in range(c)]
    if len(devices) != n:
        raise ValueError(f"the groups describe {len(devices)} devices, not {n}")
    random.Random(seed).shuffle(devices)  # noqa: S311 - a reproducible mix, not a secret
    return devices


@dataclass(frozen=True)
class FleetSnapshot:
    """The newest snapshot of every worker, merged."""

    parts: tuple[dict[str, Any], ...]

    def _sum(self, key: str) -> int:
        return sum(int(p.get(key, 0)) for p in self.parts)

    def _counter(self, key: str) -> Counter[str]:
        total: Counter[str] = Counter()
        for part in self.parts:
            total.update(part.get(key, {}))
        return total

    @property
    def devices(self) -> int:
        return self._sum("devices")

    @property
    def online(self) -> int:
        return self._sum("online")

    @property
    def offline_by_design(self) -> int:
        return self._sum("offline_by_design")

    @property
    def states(self) -> Counter[str]:
        return self._counter("states")

    @property
    def verdicts(self) -> Counter[str]:
        return self._counter("verdicts")

    @property
    def mqtt(self) -> Counter[str]:
        return self._counter("mqtt")

    @property
    def reports(self) -> int:
        return self._sum("reports")

    @property
    def baseline_devices(self) -> int:
        return self._sum("baseline_devices")

    @property
    def cpu_s(self) -> float:
        return sum(float(p.get("cpu_s", 0.0)) for p in self.parts)

    def latest(self, key: str) -> float:
        return max((float(p.get(key, 0.0)) for p in self.parts), default=0.0)

    def committed(self, model: str, release: int) -> int:
        return self._counter("committed")[f"{model}@{release}"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "online": self.online,
            "offline_by_design": self.offline_by_design,
            "states": dict(self.states),
            "committed": dict(self._counter("committed")),
            "verdicts": dict(self.verdicts),
            "reports": self.reports,
            "mqtt": dict(self.mqtt),
            "downloads": self._sum("downloads"),
            "cache_hits": self._sum("cache_hits"),
            "cpu_s": round(self.cpu_s, 2),
        }


class FleetError(RuntimeError):
    pass


class Fleet:
    """Simulator processes and what they last reported (see the module docstring)."""

    def __init__(self, processes: list[Any], conns: list[Connection]) -> None:
        self.processes, self.conns = processes, conns
        self._parts: dict[int, dict[str, Any]] = {}
        self._enrolled: dict[int, dict[str, Any]] = {}
        self._details: dict[int, list[dict[str, Any]]] = {}
        self._errors: list[str] = []
        self._stopped: set[int] = set()
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="fleetsim-reader", daemon=True)
        self._reader.start()
        self.enroll_s = self.online_s = 0.0

    @classmethod
    def start(
        cls,
        n: int,
        server_url: str,
        enroll_token: str,
        behaviours: Behaviours = "success",
        broker_url: str | None = None,
        *,
        workers: int = DEFAULT_WORKERS,
        labels: dict[str, str] | None = None,
        timing: Timing | None = None,
        enroll_concurrency: int = 4,
        connect_window: int = 64,
        wait_online_s: float = 600.0,
        seed: int = 0,
        on_enrolled: Callable[[], None] | None = None,
    ) -> Fleet:
        """Enroll ``n`` devices, connect them, and return once every non-offline one is online.

        ``on_enrolled`` runs once every device is enrolled, before any of them
        connects: the place to make sure the broker reloaded its password file
        (Mosquitto drops a SIGHUP that arrives while it is reloading, so after
        a burst of enrollments the last devices can stay refused until the
        file changes again), or to finish a bulk enrollment
        (:meth:`benchmarks._fleetsim_stack.Stack.enable_broker_sync`).
        """
        plan = plan_devices(n, parse_mix(behaviours), seed)
        workers = max(1, min(workers, n))
        context = multiprocessing.get_context("spawn")
        processes, conns = [], []
        started = time.monotonic()
        for index in range(workers):
            share = plan[index::workers]
            config = WorkerConfig(
                index=index,
                server_url=server_url.rstrip("/"),
                enroll_token=enroll_token,
                behaviours=[b for b, _ in share],
                labels=[{**(labels or {}), **extra} for _, extra in share],
                broker_url=broker_url,
                timing=timing or Timing(),
                enroll_concurrency=enroll_concurrency,
                connect_window=connect_window,
            )
            ours, theirs = context.Pipe()
            process = context.Process(
                target=main, args=(theirs, config), name=f"fleetsim-{index}", daemon=True
            )
            process.start()
            theirs.close()
            processes.append(process)
            conns.append(ours)
        fleet = cls(processes, conns)
        try:
            fleet._wait(lambda: len(fleet._enrolled) == workers, wait_online_s, "enrollment")
            fleet.enroll_s = time.monotonic() - started
            if on_enrolled is not None:
                on_enrolled()
            for conn in conns:
                conn.send(("connect",))
            offline = sum(b == Behaviour.OFFLINE.value for b, _ in plan)
            fleet.wait_for(
                lambda s: s.online >= n - offline,
                wait_online_s,
                "every device online (refused ones: has the broker reloaded its password file?)",
            )
            fleet.online_s = time.monotonic() - started - fleet.enroll_s
        except BaseException:
            fleet.stop()
            raise
        return fleet

    # -- reading the workers ------------------------------------------------------------------

    def _read(self) -> None:
        open_conns = {id(c): i for i, c in enumerate(self.conns)}
        while open_conns:
            ready = wait([c for c in self.conns if id(c) in open_conns], timeout=0.5)
            for conn in ready:
                assert isinstance(conn, Connection)
                index = open_conns[id(conn)]
                try:
                    kind, body = conn.recv()
                except (EOFError, OSError):
                    del open_conns[id(conn)]
                    with self._changed:
                        if index not in self._stopped:
                            self._errors.append(f"worker {index} ended unexpectedly")
                        self._changed.notify_all()
                    continue
                with self._changed:
                    if kind in ("snapshot", "stopped"):
                        if body:
                            self._parts[index] = body
                        if kind == "stopped":
                            self._stopped.add(index)
                    elif kind == "enrolled":
                        self._enrolled[index] = body
                    elif kind == "details":
                        self._details[index] = body
                    elif kind == "error":
                        self._errors.append(str(body))
                    self._changed.notify_all()

    def _wait(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not ready():
                if self._errors:
                    raise FleetError("; ".join(self._errors))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fleetsim: no {what} within {timeout_s:g} s")
                self._changed.wait(min(left, 1.0))

    # -- public ---------------------------------------------------------------------------------

    @property
    def device_ids(self) -> list[str]:
        return [d for part in self._enrolled.values() for d, _ in part["devices"]]

    @property
    def behaviours(self) -> dict[str, str]:
        return {d: b for part in self._enrolled.values() for d, b in part["devices"]}

    def snapshot(self) -> FleetSnapshot:
        with self._changed:
            return FleetSnapshot(tuple(self._parts[i] for i in sorted(self._parts)))

    def wait_for(
        self, condition: Callable[[FleetSnapshot], bool], timeout_s: float, what: str = "condition"
    ) -> FleetSnapshot:
        """Wait until ``condition(snapshot)`` holds; TimeoutError with the last snapshot if not."""
        try:
            self._wait(
                lambda: len(self._parts) == len(self.conns) and condition(self._merged()),
                timeout_s,
                what,
            )
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}: {json.dumps(self.snapshot().to_dict())}") from None
        return self.snapshot()

    def _merged(self) -> FleetSnapshot:
        return FleetSnapshot(tuple(self._parts[i] for i in sorted(self._parts)))

    def details(self, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Every device's state as its simulator sees it."""
        with self._changed:
            self._details.clear()
        for conn in self.conns:
            conn.send(("details",))
        self._wait(lambda: len(self._details) == len(self.conns), timeout_s, "device details")
        return [d for i in sorted(self._details) for d in self._details[i]]

    def stop(self, timeout_s: float = 30.0) -> FleetSnapshot:
        """Disconnect every device cleanly and end the processes."""
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(("stop",))
        with contextlib.suppress(TimeoutError, FleetError):
            self._wait(lambda: len(self._stopped) == len(self.conns), timeout_s, "clean stop")
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
        return self.snapshot()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


__all__ = [
    "Behaviour",
    "Fleet",
    "FleetError",
    "FleetSnapshot",
    "Group",
    "Timing",
    "parse_mix",
    "plan_devices",
]

if __name__ == "__main__":
    from benchmarks._fleetsim_cli import cli

    cli()
