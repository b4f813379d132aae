"""``python -m benchmarks.fleetsim``: run a simulated fleet against a control plane.

Theory of operation: the flags name a control plane and an enrollment token
(or ``--local-stack`` starts Mosquitto and ``fleetctl serve`` in a scratch
directory, :mod:`benchmarks._fleetsim_stack`); :class:`benchmarks.fleetsim.Fleet`
enrolls and connects the devices, then a JSON snapshot line goes to stdout
every ``--every-s`` until ``--duration-s`` passes or Ctrl-C, and a last one
after a clean stop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks._fleetsim_device import Behaviour, Timing
from benchmarks._fleetsim_stack import running_stack
from benchmarks.fleetsim import DEFAULT_WORKERS, Fleet, say


@contextlib.contextmanager
def _target(
    args: argparse.Namespace,
) -> Iterator[tuple[str, str, str | None, Callable[[], None] | None]]:
    """Server URL, enrollment token, broker URL override and a broker reload, from the flags
    or a local stack."""
    if not args.local_stack:
        if not (args.server and args.enroll_token):
            sys.exit("give --server and --enroll-token, or --local-stack")
        yield args.server, args.enroll_token, args.broker, None
        return
    with (
        tempfile.TemporaryDirectory(prefix="edgefleet-fleetsim-") as tmp,
        running_stack(Path(tmp)) as stack,
    ):
        say(f"control plane {stack.url} (admin token {stack.admin_token})")
        say(f"broker {stack.broker.url}")
        yield stack.url, stack.enroll_token(args.devices), None, stack.broker.resignal


def cli() -> None:
    parser = argparse.ArgumentParser(
        description="The fleet simulator: many simulated agents, each a real MQTT client.",
        epilog="Behaviours: " + ", ".join(b.value for b in Behaviour),
    )
    parser.add_argument("--server", help="control plane URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--enroll-token", help="an enrollment token (efe_…) with enough uses")
    parser.add_argument("--broker", help="broker URL (default: the one enrollment names)")
    parser.add_argument("--local-stack", action="store_true", help="start Mosquitto + fleetctl")
    parser.add_argument("--devices", type=int, default=100, help="fleet size")
    parser.add_argument("--mix", default="success", help="e.g. success=0.9,smoke_fail=0.1")
    parser.add_argument("--labels", default="", help="labels of every device, e.g. site=a,hw=x")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="OS processes")
    parser.add_argument("--step-delay-s", type=float, default=0.0, help="before each transition")
    parser.add_argument("--slow-s", type=float, default=5.0, help="extra download time, slow")
    parser.add_argument("--flap-down-s", type=float, default=2.0, help="time away, flap")
    parser.add_argument("--enroll-concurrency", type=int, default=4, help="per process")
    parser.add_argument("--duration-s", type=float, default=0.0, help="then stop (0: Ctrl-C)")
    parser.add_argument("--every-s", type=float, default=5.0, help="snapshot line interval")
    args = parser.parse_args()
    labels = dict(p.split("=", 1) for p in args.labels.split(",") if p.strip())
    timing = Timing(args.step_delay_s, args.slow_s, args.flap_down_s)
    with _target(args) as (server, token, broker, reload):
        say(f"enrolling and connecting {args.devices} devices ({args.mix})")
        fleet = Fleet.start(
            args.devices,
            server,
            token,
            args.mix,
            broker,
            workers=args.workers,
            labels=labels,
            timing=timing,
            enroll_concurrency=args.enroll_concurrency,
            on_enrolled=reload,
        )
        with fleet:
            say(f"enrolled in {fleet.enroll_s:.1f} s, online {fleet.online_s:.1f} s later")
            deadline = time.monotonic() + (args.duration_s or float("inf"))
            with contextlib.suppress(KeyboardInterrupt):
                while time.monotonic() < deadline:
                    print(json.dumps(fleet.snapshot().to_dict()), flush=True)
                    time.sleep(min(args.every_s, max(0.0, deadline - time.monotonic())))
            print(json.dumps(fleet.stop().to_dict()), flush=True)


__all__ = ["cli"]
