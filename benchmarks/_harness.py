"""Process and measurement helpers shared by the benchmarks.

Starting and stopping real server processes, waiting for them, counting their
CPU time from ``/proc``, and driving HTTP load with ``wrk``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def say(message: str) -> None:
    print(f"[serve] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Processes:
    """Started processes, each in its own session; ``stop_all`` ends exactly those."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.started):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{proc.args!r} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    sys.exit(f"no answer from {url} after {timeout_s} s:\n{log.read_text()[-2000:]}")


def cli(env: dict[str, str], *args: str) -> str:
    argv = [sys.executable, "-m", "control_plane.cli", *args]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        sys.exit(f"fleetctl {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip()


def cpu_seconds(session: int) -> float:
    """User + system CPU time so far of every process in a session (Linux ``/proc``)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[3]) == session:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


_WRK_LINE = re.compile(r"^\s*(50|99)%\s+([0-9.]+)(us|ms|s)\s*$")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, headers: dict[str, str], concurrency: int, seconds: int) -> dict[str, float]:
    """p50/p99 latency (ms) and requests/s of ``url`` under ``concurrency`` open connections.

    wrk is a C load generator: a Python client on the same two cores would
    measure itself as much as the server.
    """
    argv = ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    for key, value in headers.items():
        argv += ["-H", f"{key}: {value}"]
    done = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if done.returncode != 0:
        sys.exit(f"wrk failed: {done.stderr.strip()[-500:]}")
    out = done.stdout
    if "Non-2xx or 3xx responses" in out or "Socket errors" in out:
        sys.exit(f"wrk saw failed requests against {url}:\n{out}")
    figures: dict[str, float] = {}
    for line in out.splitlines():
        match = _WRK_LINE.match(line)
        if match:
            figures[f"p{match.group(1)}_ms"] = float(match.group(2)) * _UNITS[match.group(3)]
        elif line.startswith("Requests/sec:"):
            figures["requests_per_s"] = float(line.split()[1])
        elif "requests in" in line:
            figures["requests"] = float(line.split()[0])
    if len(figures) != 4:
        sys.exit(f"could not read wrk's output:\n{out}")
    return figures
