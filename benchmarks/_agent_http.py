"""HTTP helpers of ``benchmarks.agent``: the server child process and keep-alive clients.

:class:`AgentServer` starts ``benchmarks._agent_server`` (a fleet-agent-like
process serving one model over the local API), waits for its ready line, reads
its memory from ``/proc`` and stops it by closing its stdin (terminating it by
its own pid only if it does not exit). The request loops time one request at a
time on one keep-alive connection: stdlib ``http.client`` (TCP or Unix
socket), or the project's httpx-based :class:`agent.local.Client`.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from agent.local import Client

ROOT = Path(__file__).resolve().parent.parent


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(self._path)
        self.sock = sock


class AgentServer:
    """The server child process; ``close`` ends it (stdin EOF, then terminate if needed)."""

    def __init__(self, model: Path, fmt: str, listens: list[str]) -> None:
        argv = [sys.executable, "-m", "benchmarks._agent_server", str(model), fmt, *listens]
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            sys.exit(f"the server child exited with {self.proc.returncode}")
        ready = json.loads(line)
        self.pid: int = ready["pid"]
        self.addresses: list[str] = ready["addresses"]

    def status(self) -> dict[str, int]:
        fields = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in {"VmRSS", "VmHWM"}:
                fields[key] = int(value.split()[0]) * 1024
        return fields

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def _connection(address: str) -> http.client.HTTPConnection:
    if address.startswith("unix:"):
        return _UnixConnection(address.removeprefix("unix:"))
    host, port = address.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=10)


def stdlib_requests(address: str, body: bytes, count: int) -> tuple[list[float], bytes]:
    conn = _connection(address)
    headers = {"Content-Type": "application/json"}
    latencies, first = [], b""
    try:
        for _ in range(count):
            start = time.perf_counter_ns()
            conn.request("POST", "/v1/infer", body, headers)
            response = conn.getresponse()
            data = response.read()
            latencies.append((time.perf_counter_ns() - start) / 1e6)
            if response.status != 200:
                sys.exit(f"{address} answered {response.status}: {data[:300]!r}")
            first = first or data
    finally:
        conn.close()
    return latencies, first


def client_requests(address: str, rows: npt.NDArray[np.float32], count: int) -> list[float]:
    target = address if address.startswith("unix:") else f"http://{address}"
    latencies = []
    with Client(target) as client:
        for _ in range(count):
            start = time.perf_counter_ns()
            client.infer(rows)
            latencies.append((time.perf_counter_ns() - start) / 1e6)
    return latencies


__all__ = ["ROOT", "AgentServer", "client_requests", "stdlib_requests"]
