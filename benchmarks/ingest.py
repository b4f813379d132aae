"""Ingestion benchmark: drain a broker backlog of telemetry and drift into SQLite and PostgreSQL.

Theory of operation. A real Mosquitto (the shipped policy, with its queue and
in-flight limits raised so a whole backlog fits one session) and many
simulated devices, each with its own credential, publishing from a few
processes (:mod:`benchmarks._ingest_publish`) at QoS 1. For each database:

1. the control plane's real MQTT bridge (:class:`control_plane.mqtt.bridge.MqttBridge`,
   built by :func:`control_plane.main.build_services`) runs in ``--workers``
   worker processes (:mod:`benchmarks._ingest_worker`), as ``fleetctl serve
   --workers N`` runs it: one worker subscribes plainly, several share the
   subscriptions (MQTT 5 ``$share``). They connect once, so their persistent
   sessions (fixed client ids, cleared first) hold the subscriptions, and leave;
2. the devices publish ``--messages`` windows (half telemetry reports, half
   drift summaries) while the consumers are offline: the broker queues them;
3. the workers start again on the same sessions and the clock runs until every
   window is a row (``telemetry_window`` + ``drift_window``), counted in the
   database itself.

The limit is the broker itself: ``mosquitto_sub`` (C, no parsing, no
database) drains an identical backlog to ``/dev/null`` on a persistent
session of its own; each run reports its rate as a ratio of that, against
:data:`TARGET_RATIO`. Lost = windows published but not stored; duplicated =
windows delivered more than once (counted by ingestion; the store keeps one
row each). ``meets_target`` needs the ratio and nothing lost or duplicated.

Prints JSON lines. Run: ``.venv/bin/python -m benchmarks.ingest [--messages N]``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy import Engine, text

from benchmarks._harness import free_port
from control_plane.config import Settings
from control_plane.db.engine import make_engine
from control_plane.db.migrate import upgrade
from control_plane.main import build_services
from control_plane.mqtt.bridge import client_id
from control_plane.mqtt.passwords import Account, hash_password
from tests.contract.test_device_store import device_id
from tests.support import postgres
from tests.support.mosquitto import ACL, Broker, find_mosquitto
from tests.unit.control_plane.telemetry.support import stock

CONTROL_PLANE = "control-plane"
TOPICS = ("edgefleet/v1/devices/+/telemetry", "edgefleet/v1/devices/+/drift")


def say(message: str) -> None:
    print(f"[ingest] {message}", file=sys.stderr, flush=True)


@dataclass
class BacklogBroker(Broker):
    """The test broker, with room for a whole backlog in one session and a wide window."""

    queued: int = 1_000_000

    def extra_lines(self) -> list[str]:
        return [
            "log_type error",
            "log_type warning",
            "connection_messages false",
            f"max_queued_messages {self.queued}",
            "max_inflight_messages 5000",
            "autosave_interval 3600",
        ]


def start_broker(directory: Path, users: dict[str, str], queued: int) -> BacklogBroker:
    directory.mkdir(parents=True, exist_ok=True)
    broker = BacklogBroker(directory, free_port(), find_mosquitto(), queued=queued)
    lines = "".join(Account(u, hash_password(p)).line() for u, p in users.items())
    broker.password_file.write_text(lines)
    broker.password_file.chmod(0o640)
    shutil.copyfile(ACL, broker.acl_file)
    broker.write_config()
    broker.start()
    return broker


def publish(broker: Broker, devices: list[tuple[str, str]], windows: int, processes: int) -> float:
    """Every device publishes ``windows`` telemetry reports and drift summaries; msg/s."""
    shares = [devices[i::processes] for i in range(processes)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks._ingest_publish",
                broker.host,
                str(broker.port),
                json.dumps({"devices": share, "windows": windows, "release": 1}),
            ],
            stdout=subprocess.PIPE,
        )
        for share in shares
        if share
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise SystemExit("a publisher failed")
        results.append(json.loads(out))
    published = sum(int(r["published"]) for r in results)
    slowest = max(float(r["seconds"]) for r in results)
    return published / slowest


def mosquitto_sub(broker: Broker, password: str, count: int | None) -> list[str]:
    argv = ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-V", "mqttv5"]
    argv += ["-u", CONTROL_PLANE, "-P", password, "-i", "bench-mosquitto-sub", "-c", "-q", "1"]
    argv += ["-x", "3600"]
    for name in TOPICS:
        argv += ["-t", name]
    return argv + (["-E"] if count is None else ["-C", str(count)])


def baseline(broker: Broker, password: str, devices: list[tuple[str, str]], args: Any) -> float:
    subprocess.run(mosquitto_sub(broker, password, None), check=True, timeout=60)
    rate = publish(broker, devices, args.windows, args.processes)
    say(f"backlog published for mosquitto_sub at {rate:,.0f} msg/s")
    started = time.perf_counter()
    subprocess.run(
        mosquitto_sub(broker, password, args.total),
        check=True,
        timeout=1800,
        stdout=subprocess.DEVNULL,
    )
    total: int = args.total
    return total / (time.perf_counter() - started)


def rows(engine: Engine) -> int:
    with engine.connect() as connection:
        return sum(
            int(connection.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())  # noqa: S608
            for t in ("telemetry_window", "drift_window")
        )


def forget_sessions(broker: Broker, password: str, workers: int) -> None:
    """End the workers' persistent sessions, so a run starts with only its own subscriptions."""
    for slot in range(workers):
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id(slot),
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.username_pw_set(CONTROL_PLANE, password)
        client.connect(broker.host, broker.port, clean_start=True)
        client.loop_start()
        time.sleep(0.2)
        client.disconnect()
        client.loop_stop()


class Workers:
    """``count`` control-plane worker processes (:mod:`benchmarks._ingest_worker`)."""

    def __init__(self, spec: dict[str, Any], count: int) -> None:
        argv = [sys.executable, "-m", "benchmarks._ingest_worker", json.dumps(spec)]
        self.procs = [
            subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for _ in range(count)
        ]
        self._expect("ready")

    def _expect(self, what: str) -> None:
        for proc in self.procs:
            assert proc.stdout is not None
            if what not in json.loads(proc.stdout.readline() or "{}"):
                raise SystemExit(f"a control-plane worker did not report {what}")

    def start(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("start\n")
            proc.stdin.flush()
        self._expect("connected")

    def stop(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for proc in self.procs:
            out, _ = proc.communicate("stop\n", timeout=120)
            for name, value in json.loads(out.strip().splitlines()[-1]).items():
                totals[name] = totals.get(name, 0) + int(value)
        return totals


def drain(
    database: str,
    url: str,
    work: Path,
    broker: Broker,
    password: str,
    devices: list[tuple[str, str]],
    args: Any,
    workers: int,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "data_dir": str(work / f"{database}-{workers}"),
        "database_url": url,
        "mqtt": {
            "url": broker.url,
            "password": password,
            "protocol": "5",
            # One worker subscribes plainly; several share the subscriptions (MQTT 5).
            "shared_group": "" if workers == 1 else CONTROL_PLANE,
            "ingest_batch_messages": args.batch,
            "ingest_queue_messages": 4 * args.batch,
        },
        "telemetry": {"rollup_interval_s": 0},
    }
    upgrade(url)
    services = build_services(Settings(**spec))
    stock(services.store, len(devices))
    engine = make_engine(url)
    forget_sessions(broker, password, workers)
    primers = Workers(spec, workers)
    primers.start()
    primers.stop()  # the sessions now hold the subscriptions
    rate = publish(broker, devices, args.windows, args.processes)
    say(f"{database} x{workers}: {args.total:,} published at {rate:,.0f} msg/s; draining")
    consumers = Workers(spec, workers)
    started = time.perf_counter()
    consumers.start()
    deadline = started + args.timeout
    while time.perf_counter() < deadline and rows(engine) < args.total:
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    time.sleep(0.5)  # late redeliveries would show up as duplicates
    counts = consumers.stop()
    stored = rows(engine)
    engine.dispose()
    dispose = getattr(services.store, "dispose", None) or services.store._engine.dispose  # type: ignore[attr-defined]
    dispose()
    return {
        "database": database,
        "workers": workers,
        "subscription": "plain" if workers == 1 else "shared (MQTT 5)",
        "messages": args.total,
        "devices": len(devices),
        "seconds": round(seconds, 3),
        "msg_per_s": round(args.total / seconds),
        "stored": stored,
        "lost": args.total - stored,
        "received": counts.get("received", 0),
        "duplicated": counts.get("duplicated", 0),
        "dropped": counts.get("dropped", 0),
        "store_s_per_worker": round(counts.get("store_ms", 0) / 1000 / workers, 3),
        "batch": args.batch,
    }


#: Drain rate wanted, as a fraction of mosquitto_sub's on the same backlog.
TARGET_RATIO = 0.3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000, help="backlog size (both kinds)")
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--processes", type=int, default=4, help="publisher processes")
    parser.add_argument("--batch", type=int, default=2000, help="messages per database batch")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to drain")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--workers", default="1,2", help="control-plane worker counts to run")
    args = parser.parse_args()
    args.windows = max(1, args.messages // (2 * args.devices))
    args.total = 2 * args.windows * args.devices
    password = secrets.token_urlsafe(24)
    devices = [(device_id(n), secrets.token_urlsafe(12)) for n in range(1, args.devices + 1)]
    users = {CONTROL_PLANE: password, **dict(devices)}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        work = Path(tmp)
        broker = start_broker(work / "broker", users, queued=2 * args.total)
        stack.callback(broker.stop)
        limit = baseline(broker, password, devices, args)
        print(json.dumps({"mosquitto_sub_msg_per_s": round(limit), "messages": args.total}))
        for database in args.databases.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                if database == "sqlite":
                    url = f"sqlite:///{work / f'sqlite-{workers}' / 'edgefleet.db'}"
                else:
                    reason = postgres.unreachable_reason(postgres.server_url())
                    if reason is not None:
                        print(json.dumps({"database": database, "skipped": reason}))
                        break
                    url = stack.enter_context(postgres.throwaway_database(postgres.server_url()))
                result = drain(database, url, work, broker, password, devices, args, workers)
                ratio = result["msg_per_s"] / limit
                result["mosquitto_sub_msg_per_s"] = round(limit)
                result["ratio_to_mosquitto_sub"] = round(ratio, 3)
                result["target_ratio"] = TARGET_RATIO
                clean = result["lost"] == 0 and result["duplicated"] == 0
                result["meets_target"] = clean and ratio >= TARGET_RATIO
                print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
