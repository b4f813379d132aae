"""Benchmark: a staged rollout to 1,000 and 10,000 simulated devices, all over real services.

For each fleet size, in a fresh scratch directory: a real Mosquitto (the
shipped policy with a raised per-client queue limit and ``$SYS`` counters,
:mod:`benchmarks._fleetsim_stack`), a real ``fleetctl serve`` (SQLite, the
embedded defaults plus the broker), a signed release of the tiny ONNX model,
and the fleet simulator (:mod:`benchmarks.fleetsim`): ``N`` devices enrolled
over HTTP, each a real MQTT client that verifies, downloads (cached per
simulator process) and reports like an agent. Then one rollout of four waves
(10/25/50/100 %, no soak, the default install gate) is created with
``POST /v1/rollouts`` and followed to the end.

Figures, one JSON line each per size:

* ``rollout_wall_time``: from the ``POST`` to the last device's ``committed``
  report, and to the rollout's phase ``completed``; devices per minute against
  the target (10,000 devices in 60 s, i.e. ten times the 1,000 devices per minute
  that AWS IoT Jobs allows at most) and, measured in the same run on the same
  connected fleet, the broker-only baseline: one publisher (the control
  plane's broker account, paho with its default in-flight window, as the
  control plane's bridge) publishes ``N`` retained QoS 1 messages of the
  desired state's size to the ``N`` desired topics, timed until every device
  received its own; no control plane is involved;
* ``rollout_cpu``: CPU seconds of the control plane's whole process tree
  during the rollout (``/proc``), per device, beside the broker's and the
  simulator's own;
* ``rollout_database``: rows of the tables a rollout writes and the SQLite
  file sizes (database, WAL, shared memory) afterwards;
* ``rollout_memory``: peak summed VmRSS of the control plane's processes
  (sampled every 0.25 s) and the sum of their VmHWM;
* ``rollout_messages``: every message end to end: reports the devices sent
  and the broker acknowledged, what the broker counted (``$SYS``: publishes
  received (not retained, i.e. the reports), sent, dropped), reports stored by
  the control plane, desired states the devices received and how they judged
  them; ``lossless`` is true only when every report the devices sent reached
  the broker and the database and the broker dropped nothing;
* ``enrollment``: how long the ``N`` enrollments and the first connections took.

Enrollment: up to ``--live-enroll-max`` devices enroll *live*, as devices do
in the field: the server rewrites Mosquitto's password file and signals the
broker after every enrollment (O(N) per enrollment, so O(N²) for a fleet:
10,000 took about ten minutes here). Larger fleets enroll in *bulk* through the
same endpoint while the server runs without the password-file sync, then the
server restarts with it and writes every account at start-up, once. Either
way the broker is signalled again afterwards, because Mosquitto loses a
SIGHUP that arrives while it is reloading.

``--profile DIR`` also records the control plane's workers with ``py-spy``
(``pip install py-spy``) during the largest rollout and prints the top
functions to stderr.

Usage: ``python -m benchmarks.rollout [--devices 1000,10000] [--mix success]
[--workers 4] [--waves 10,25,50,100] [--tick-s 1] [--timeout-s 600]
[--live-enroll-max 2000] [--profile DIR]`` (``./dev bench rollout``).
Progress on stderr; every process started is stopped on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks._fleetsim_profile import profiled
from benchmarks._fleetsim_stack import Stack, running_stack
from benchmarks._fleetsim_worker import BASELINE_PREFIX
from benchmarks.fleetsim import Fleet, FleetSnapshot
from fleetcore.protocol import Channel, topic

MODEL = "fleetsim"
TARGET_DEVICES_PER_MIN = 10_000
AWS_IOT_JOBS_MAX_DEVICES_PER_MIN = 1_000
TERMINAL = ("completed", "failed", "aborted", "rolled_back")
Figure = dict[str, Any]


def say(message: str) -> None:
    print(f"[rollout] {message}", file=sys.stderr, flush=True)


def emit(figure: Figure) -> None:
    print(json.dumps({"benchmark": "rollout", **figure}), flush=True)


# -- the broker-only baseline ------------------------------------------------------------------


def broker_fanout(stack: Stack, fleet: Fleet, devices: list[str], size: int) -> float:
    """Seconds until every device received its own retained message of ``size`` bytes."""
    run = secrets.token_hex(4).encode()
    payload = BASELINE_PREFIX + run + b":" + b"x" * max(0, size - len(BASELINE_PREFIX) - 9)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fleetsim-baseline-{run.decode()}")
    client.username_pw_set("control-plane", stack.mqtt_password)
    client.connect(stack.broker.host, stack.broker.port, keepalive=60)
    client.loop_start()
    try:
        before = fleet.snapshot().baseline_devices
        start = time.time()
        infos = [
            client.publish(topic(d, Channel.DESIRED), payload, qos=1, retain=True) for d in devices
        ]
        got = fleet.wait_for(
            lambda s: s.baseline_devices - before >= len(devices), 600, "the baseline messages"
        )
        elapsed = got.latest("baseline_last_wall") - start
        for info in infos:
            info.wait_for_publish(60)
        # Leave no stray retained message behind: the rollout publishes the real ones.
        received = got.mqtt["received"]
        for device in devices:
            client.publish(topic(device, Channel.DESIRED), b"", qos=1, retain=True)
        fleet.wait_for(
            lambda s: s.mqtt["received"] >= received + len(devices), 600, "the cleared messages"
        )
        return elapsed
    finally:
        client.disconnect()
        client.loop_stop()


# -- one fleet size --------------------------------------------------------------------------------


def follow(stack: Stack, rollout_id: str, start: float, timeout_s: float) -> dict[str, Any]:
    """Poll the rollout until it ends; the wall times its waves opened and it ended."""
    opened: dict[int, float] = {0: 0.0}
    deadline = time.monotonic() + timeout_s
    with stack.admin() as client:
        while time.monotonic() < deadline:
            view = client.get(f"/v1/rollouts/{rollout_id}").raise_for_status().json()
            now = time.time() - start
            opened.setdefault(int(view["wave"]), now)
            if view["phase"] in TERMINAL:
                return {"phase": view["phase"], "ended_s": now, "opened": opened, "view": view}
            time.sleep(0.2)
    raise TimeoutError(f"rollout {rollout_id} did not end within {timeout_s:g} s")


def wait_stored(stack: Stack, reports: int, timeout_s: float = 60) -> tuple[dict[str, Any], float]:
    """The database once every sent report is stored (or the timeout passed); seconds waited."""
    start = time.monotonic()
    while True:
        found = stack.database()
        if found["rows"]["device_report"] >= reports or time.monotonic() - start > timeout_s:
            return found, time.monotonic() - start
        time.sleep(0.25)


def run_size(n: int, args: argparse.Namespace, workdir: Path) -> list[Figure]:
    env = {"EDGEFLEET_ROLLOUT_TICK_S": str(args.tick_s)}
    bulk = n > args.live_enroll_max
    with running_stack(workdir, extra_env=env, broker_sync=not bulk) as stack:
        counter, _ = stack.release(MODEL, "1", pad_bytes=args.artifact_kib * 1024)
        mode = "bulk (broker sync at restart)" if bulk else "live (broker sync per enrollment)"
        say(f"{n} devices, enrollment {mode}: control plane {stack.url}, broker {stack.broker.url}")
        synced: list[float] = []

        def enrolled() -> None:
            start = time.monotonic()
            if bulk:
                stack.enable_broker_sync()
            else:
                stack.broker.resignal()
            synced.append(time.monotonic() - start)

        fleet = Fleet.start(
            n,
            stack.url,
            stack.enroll_token(n),
            args.mix,
            workers=args.workers,
            wait_online_s=900,
            on_enrolled=enrolled,
        )
        with fleet:
            say(f"enrolled in {fleet.enroll_s:.1f} s, all online {fleet.online_s:.1f} s later")
            behaviours = fleet.behaviours
            online = [d for d, b in behaviours.items() if b != "offline"]
            with stack.admin() as client:
                manifest = client.get(f"/v1/releases/{MODEL}/{counter}/manifest")
                size = len(manifest.raise_for_status().content) + 1500
            baseline_s = broker_fanout(stack, fleet, online, size)
            say(f"broker-only baseline: {len(online)} retained messages in {baseline_s:.2f} s")
            figures = rollout(stack, fleet, n, args, counter)
        figures["rollout_wall_time"]["broker_only_fanout_s"] = round(baseline_s, 3)
        wall = figures["rollout_wall_time"]["wall_s_to_all_committed"]
        figures["rollout_wall_time"]["ratio_vs_broker_only"] = round(wall / baseline_s, 1)
        figures["enrollment"] = {
            "figure": "enrollment",
            "devices": n,
            "mode": mode,
            "enroll_s": round(fleet.enroll_s, 2),
            "enrollments_per_s": round(n / fleet.enroll_s, 1),
            "broker_sync_s": round(synced[0], 2) if synced else None,
            "all_online_after_s": round(fleet.online_s, 2),
            "simulator_processes": args.workers,
        }
    return list(figures.values())


def rollout(
    stack: Stack, fleet: Fleet, n: int, args: argparse.Namespace, counter: int
) -> dict[str, Figure]:
    waves = [{"percent": float(p)} for p in args.waves.split(",")]
    document = {
        "metadata": {"name": f"bench-{n}"},
        "spec": {"model": MODEL, "release": counter, "waves": waves},
    }
    before = fleet.snapshot()
    db0 = stack.database()
    sys0 = stack.meter.read()
    cpu0, broker0 = stack.server_cpu_s(), stack.broker_cpu_s()
    label = f"cp-{n}"
    profile = args.profile if n == max(args.sizes) else None
    with profiled(stack, profile, label), stack.rss_sampler() as peak, stack.admin() as client:
        start = time.time()
        created = client.post("/v1/rollouts", json=document).raise_for_status().json()
        create_s = time.time() - start
        rollout_id = created["rollout"]["id"]
        sizes = created["plan"]["wave_sizes"]
        say(f"rollout {rollout_id} created in {create_s:.2f} s; waves {sizes}")
        ended = follow(stack, rollout_id, start, args.timeout_s)
        cpu1, broker1 = stack.server_cpu_s(), stack.broker_cpu_s()
    after = fleet.snapshot()
    committed = after.committed(MODEL, counter)
    last_commit = after.latest("last_commit_wall") - start
    say(
        f"rollout {ended['phase']} after {ended['ended_s']:.1f} s; {committed}/{n} committed, "
        f"the last {last_commit:.1f} s after the POST"
    )
    reports = after.reports - before.reports
    db1, lag = wait_stored(stack, db0["rows"]["device_report"] + reports)
    sys1 = stack.meter.read()
    hwm = stack.server_memory_mib()[1]
    wall = max(last_commit, 1e-9)
    cp_cpu = cpu1 - cpu0
    per_min = committed / wall * 60
    return {
        "rollout_wall_time": {
            "figure": "rollout_wall_time",
            "devices": n,
            "waves": [w["percent"] for w in waves],
            "wave_sizes": created["plan"]["wave_sizes"],
            "phase": ended["phase"],
            "committed": committed,
            "create_request_s": round(create_s, 3),
            "wall_s_to_all_committed": round(last_commit, 2),
            "wall_s_to_rollout_completed": round(ended["ended_s"], 2),
            "wave_opened_at_s": {str(k): round(v, 2) for k, v in sorted(ended["opened"].items())},
            "devices_per_min": round(per_min),
            "target_devices_per_min": TARGET_DEVICES_PER_MIN,
            "meets_target": per_min >= TARGET_DEVICES_PER_MIN,
            "aws_iot_jobs_max_devices_per_min": AWS_IOT_JOBS_MAX_DEVICES_PER_MIN,
            "ratio_vs_aws_iot_jobs_max": round(per_min / AWS_IOT_JOBS_MAX_DEVICES_PER_MIN, 1),
            "rollout_tick_s": args.tick_s,
            "mix": args.mix,
        },
        "rollout_cpu": {
            "figure": "rollout_cpu",
            "devices": n,
            "wall_s": round(ended["ended_s"], 2),
            "control_plane_cpu_s": round(cp_cpu, 2),
            "control_plane_cpu_ms_per_device": round(cp_cpu / n * 1e3, 2),
            "broker_cpu_s": round(broker1 - broker0, 2),
            "simulator_cpu_s": round(after.cpu_s - before.cpu_s, 2),
            "cpus": os.cpu_count(),
            "note": "control plane, broker and simulator share these CPUs",
        },
        "rollout_database": {
            "figure": "rollout_database",
            "devices": n,
            "rows": db1["rows"],
            "rows_added_by_rollout": {k: v - db0["rows"][k] for k, v in db1["rows"].items()},
            "bytes": db1["bytes"],
            "total_bytes": db1["total_bytes"],
            "bytes_per_device": round(db1["total_bytes"] / n),
            "database": "sqlite",
        },
        "rollout_memory": {
            "figure": "rollout_memory",
            "devices": n,
            "peak_rss_mib": round(peak[0], 1),
            "sum_vm_hwm_mib": round(hwm, 1),
            "processes": len(stack.server_pids()),
        },
        "rollout_messages": messages(n, before, after, sys0, sys1, db0, db1, lag),
    }


def messages(
    n: int,
    before: FleetSnapshot,
    after: FleetSnapshot,
    sys0: dict[str, float],
    sys1: dict[str, float],
    db0: dict[str, Any],
    db1: dict[str, Any],
    lag_s: float,
) -> Figure:
    def delta(key: str) -> int:
        return int(sys1.get(key, 0) - sys0.get(key, 0))

    sent = after.reports - before.reports
    mqtt0, mqtt1 = before.mqtt, after.mqtt
    stored = db1["rows"]["device_report"] - db0["rows"]["device_report"]
    dropped = delta("publish/messages/dropped")
    received = delta("publish/messages/received")
    return {
        "figure": "rollout_messages",
        "devices": n,
        "status_reports_sent": sent,
        "status_reports_stored": stored,
        "device_publishes": mqtt1["published"] - mqtt0["published"],
        "device_publishes_acked": mqtt1["acked"] - mqtt0["acked"],
        "desired_received": mqtt1["received"] - mqtt0["received"],
        "desired_verdicts": dict(after.verdicts - before.verdicts),
        "assignments_stored": db1["rows"]["device_assignment"] - db0["rows"]["device_assignment"],
        # Mosquitto 2.0 leaves retained publishes (the desired states) out of this one.
        "broker_publishes_received_not_retained": received,
        "broker_publishes_sent": delta("publish/messages/sent"),
        "broker_publishes_dropped": dropped,
        "ingest_lag_after_end_s": round(lag_s, 2),
        "lossless": stored == sent == received and dropped == 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="1000,10000", help="fleet sizes, comma-separated")
    parser.add_argument("--mix", default="success", help="behaviours, e.g. success=0.99,flap=0.01")
    parser.add_argument("--workers", type=int, default=4, help="simulator processes")
    parser.add_argument("--waves", default="10,25,50,100", help="cumulative wave percentages")
    parser.add_argument("--tick-s", type=float, default=1.0, help="EDGEFLEET_ROLLOUT_TICK_S")
    parser.add_argument("--artifact-kib", type=int, default=64, help="model size")
    parser.add_argument("--timeout-s", type=float, default=600, help="per rollout")
    parser.add_argument("--profile", type=Path, help="py-spy the largest rollout into DIR")
    parser.add_argument(
        "--live-enroll-max",
        type=int,
        default=2000,
        help="larger fleets enroll in bulk: broker sync off, then one restart with it on",
    )
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.devices.split(",") if s.strip()]

    def stop(signum: int, _: object) -> None:
        raise SystemExit(f"stopped by signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, stop)
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix=f"edgefleet-bench-rollout-{n}-") as tmp:
            for figure in run_size(n, args, Path(tmp)):
                emit(figure)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        say("interrupted; every process started is stopped and the temp files removed")
        sys.exit(130)
