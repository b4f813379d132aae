"""Benchmark: the control plane serving artifacts and manifests, against nginx.

Starts ``python -m control_plane.cli serve`` as a real process on a fresh data
directory (SQLite, filesystem artifact store, fresh signing keys and an admin
token made with ``token create --local``), then measures, in the same run:

* artifact_upload: one 200 MB ``POST /v1/artifacts`` per run (the repeats
  take the dedupe path, which streams, hashes and fsyncs the same way);
* artifact_download: 8 parallel ``curl`` downloads of that artifact from the
  control plane, then from nginx (``sendfile on``) serving the same file from
  the store's directory; runs alternate which side goes first, and the median
  aggregate throughput of each side is reported;
* manifest_get_latency: ``GET /v1/releases/{model}/{counter}/manifest`` of a
  real signed release of a tiny ONNX model, with 50 open connections driven by
  ``wrk`` (a C load generator), against nginx serving the same bytes as a
  static file; three alternating rounds, medians reported.

Every download's status and byte count is checked; a wrong answer fails the
benchmark rather than producing a figure. MB means 10^6 bytes. Every process
started here is stopped and the temp directory removed on exit, Ctrl-C,
failure or the overall time limit.

Usage: ``python -m benchmarks.serve [--runs 5] [--size-mb 200] [--downloaders 8]
[--seconds 8] [--concurrency 50] [--time-limit-s 1200]``. Needs ``curl``,
``nginx`` and ``wrk`` (Debian packages; ``./dev bench serve`` installs them).
Prints one JSON line per figure on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import pwd
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks._harness import Processes, cli, cpu_seconds, free_port, say, wait_http, wrk
from models.tiny import tiny_onnx_bytes

CHUNK = 1 << 20
NGINX_CONF = """\
daemon off;
worker_processes auto;
{user}pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {tmp}/nginx-access.log;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def write_artifact(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        for offset in range(0, size, CHUNK):
            handle.write(os.urandom(min(CHUNK, size - offset)))


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def fetch(url: str, headers: dict[str, str]) -> str:
    """One download with httpx (for machines without curl), as ``"<status> <bytes>"``."""
    with httpx.stream("GET", url, headers=headers, timeout=300) as response:
        return f"{response.status_code} {sum(len(c) for c in response.iter_raw(CHUNK))}"


def download_batch(url: str, headers: dict[str, str], count: int, size: int) -> float:
    """Seconds for ``count`` parallel downloads of ``url``; each must be 200 with ``size`` bytes."""
    argv = shlex.split("curl -s -o /dev/null --max-time 300 -w '%{http_code} %{size_download}'")
    argv += [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    start = time.perf_counter()
    if shutil.which("curl"):
        procs = [
            subprocess.Popen([*argv, url], stdout=subprocess.PIPE, text=True) for _ in range(count)
        ]
        try:
            answers = [p.communicate(timeout=330)[0] for p in procs]
        finally:
            for proc in (p for p in procs if p.poll() is None):
                proc.kill()
                proc.wait()
    else:
        with ThreadPoolExecutor(count) as pool:
            answers = list(pool.map(lambda _: fetch(url, headers), range(count)))
    elapsed = time.perf_counter() - start
    if any(a != f"200 {size}" for a in answers):
        sys.exit(f"a download of {url} failed: {answers}")
    return elapsed


class Bench:
    """One benchmark run: the processes it started, their URLs and the shared artifact."""

    def __init__(self, args: argparse.Namespace, tmp: Path, procs: Processes) -> None:
        self.args, self.tmp, self.procs = args, tmp, procs
        self.size = args.size_mb * 1_000_000
        self.data = tmp / "data"
        self.base = f"http://127.0.0.1:{free_port()}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
        self.env |= {
            "EDGEFLEET_DATA_DIR": str(self.data),
            "EDGEFLEET_PORT": self.base.rsplit(":", 1)[1],
            "EDGEFLEET_HOST": "127.0.0.1",
            "EDGEFLEET_MAX_UPLOAD_BYTES": str(max(self.size, 1 << 30)),
            # The HTTP path alone: no broker (the embedded one would pin one worker).
            "EDGEFLEET_MQTT__EMBEDDED": "false",
        }
        self.auth: dict[str, str] = {}
        self.sha256 = ""

    def start_control_plane(self) -> None:
        cli(self.env, "keys", "init", str(self.data / "trust"))
        token = cli(self.env, "token", "create", "bench", "--role", "admin", "--local")
        self.auth = {"Authorization": f"Bearer {token.splitlines()[-1]}"}
        log = self.tmp / "control-plane.log"
        argv = [sys.executable, "-m", "control_plane.cli", "serve"]
        wait_http(f"{self.base}/v1/health", self.procs.start(argv, self.env, log), log)

    def start_nginx(self) -> str:
        nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
        if nginx is None:
            sys.exit("nginx is not installed: 'apt-get install nginx', then run again")
        user = ""
        if os.geteuid() == 0:  # workers would otherwise drop to 'nobody' and not read tmp
            name, group = pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name
            user = f"user {name} {group};\n"
        port, conf, log = free_port(), self.tmp / "nginx.conf", self.tmp / "nginx.out"
        root = self.data / "artifacts"
        conf.write_text(NGINX_CONF.format(user=user, tmp=self.tmp, port=port, root=root))
        argv = [
            nginx,
            "-p",
            str(self.tmp),
            "-c",
            str(conf),
            "-e",
            str(self.tmp / "nginx-error.log"),
        ]
        url = f"http://127.0.0.1:{port}/sha256/{self.sha256[:2]}/{self.sha256}"
        wait_http(url, self.procs.start(argv, self.env, log), log)
        return url

    def upload(self) -> dict[str, Any]:
        artifact = self.tmp / "artifact.bin"
        write_artifact(artifact, self.size)
        say(f"control plane on {self.base}; uploading {self.args.size_mb} MB")
        seconds = []
        with httpx.Client(base_url=self.base, headers=self.auth, timeout=300) as client:
            for _ in range(self.args.runs):
                start = time.perf_counter()
                response = client.post(
                    "/v1/artifacts?kind=onnx",
                    content=file_chunks(artifact),
                    headers={"Content-Length": str(self.size)},  # as a file upload declares it
                )
                seconds.append(time.perf_counter() - start)
                if response.status_code not in (200, 201) or response.json()["length"] != self.size:
                    sys.exit(f"upload failed: {response.status_code} {response.text[:500]}")
                self.sha256 = response.json()["sha256"]
        artifact.unlink()
        return {
            "figure": "artifact_upload",
            "size_mb": self.args.size_mb,
            "edgefleet_mb_s": round(self.size / 1e6 / statistics.median(seconds), 1),
            "runs": self.args.runs,
            "statistic": "median",
        }

    def downloads(self, nginx_url: str) -> dict[str, Any]:
        edgefleet, nginx = (p.pid for p in self.procs.started)  # session ids
        sides = {
            "edgefleet": (f"{self.base}/v1/artifacts/{self.sha256}", self.auth, edgefleet),
            "nginx": (nginx_url, {}, nginx),
        }
        runs, count = self.args.runs, self.args.downloaders
        times: dict[str, list[float]] = {name: [] for name in sides}
        cpu = dict.fromkeys(sides, 0.0)
        for url, headers, _ in sides.values():  # warm the page cache and both servers
            download_batch(url, headers, 1, self.size)
        for run in range(runs):
            for name in list(sides)[:: 1 if run % 2 == 0 else -1]:
                url, headers, session = sides[name]
                before = cpu_seconds(session)
                times[name].append(download_batch(url, headers, count, self.size))
                cpu[name] += cpu_seconds(session) - before
            done = ", ".join(f"{name} {t[-1]:.2f} s" for name, t in times.items())
            say(f"download run {run + 1}/{runs}: {done}")
        mb_s = {n: count * self.size / 1e6 / statistics.median(t) for n, t in times.items()}
        gb = runs * count * self.size / 1e9
        return {
            "figure": "artifact_download",
            "size_mb": self.args.size_mb,
            "downloaders": count,
            "client": "curl" if shutil.which("curl") else "httpx",
            "edgefleet_mb_s": round(mb_s["edgefleet"], 1),
            "nginx_mb_s": round(mb_s["nginx"], 1),
            "ratio": round(mb_s["edgefleet"] / mb_s["nginx"], 3),
            "target_ratio": 0.5,
            "runs": runs,
            "statistic": "median",
            "edgefleet_server_cpu_s_per_gb": round(cpu["edgefleet"] / gb, 3),
            "nginx_server_cpu_s_per_gb": round(cpu["nginx"] / gb, 3),
            "cpus": os.cpu_count(),
        }

    def manifests(self, nginx_url: str) -> dict[str, Any]:
        say("releasing a tiny ONNX model for the manifest figure")
        with httpx.Client(base_url=self.base, headers=self.auth, timeout=120) as client:
            model = client.post("/v1/artifacts?kind=onnx", content=tiny_onnx_bytes())
            model.raise_for_status()
            version = {"version": "1.0.0", "artifact_sha256": model.json()["sha256"]}
            client.post("/v1/models/bench/versions", json=version).raise_for_status()
            release = client.post("/v1/releases", json={"model": "bench", "version": "1.0.0"})
            release.raise_for_status()
            url = f"{self.base}/v1/releases/bench/{release.json()['counter']}/manifest"
            manifest = client.get(url)
            manifest.raise_for_status()
        # The baseline: nginx serving the same bytes as a static file.
        (self.data / "artifacts" / "manifest.json").write_bytes(manifest.content)
        static = nginx_url.split("/sha256/", 1)[0] + "/manifest.json"
        if httpx.get(static).content != manifest.content:
            sys.exit("nginx does not serve the manifest bytes")
        concurrency, seconds = self.args.concurrency, self.args.seconds
        say(f"manifest GETs: {concurrency} connections, {seconds} s per round, wrk")
        wrk(url, self.auth, concurrency, 2)  # warm-up
        server = self.procs.started[0].pid
        ours: list[dict[str, float]] = []
        theirs: list[dict[str, float]] = []
        cpu = 0.0
        for _ in range(3):
            before = cpu_seconds(server)
            ours.append(wrk(url, self.auth, concurrency, seconds))
            cpu += cpu_seconds(server) - before
            theirs.append(wrk(static, {}, concurrency, seconds))

        def median(runs: list[dict[str, float]], key: str) -> float:
            return round(float(np.median([r[key] for r in runs])), 2)

        requests = sum(r["requests"] for r in ours)
        return {
            "figure": "manifest_get_latency",
            "client": "wrk",
            "concurrency": concurrency,
            "rounds": 3,
            "seconds_per_round": seconds,
            "p50_ms": median(ours, "p50_ms"),
            "p99_ms": median(ours, "p99_ms"),
            "requests_per_s": median(ours, "requests_per_s"),
            "nginx_p50_ms": median(theirs, "p50_ms"),
            "nginx_p99_ms": median(theirs, "p99_ms"),
            "nginx_requests_per_s": median(theirs, "requests_per_s"),
            "server_cpu_ms_per_request": round(cpu / requests * 1e3, 3),
            "target_p99_ms": 50,
            "statistic": "median of rounds",
            "database": "sqlite",
        }


def emit(figure: dict[str, Any]) -> None:
    print(json.dumps({"benchmark": "serve", **figure}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per side")
    parser.add_argument("--size-mb", type=int, default=200, help="artifact size, 10^6 bytes")
    parser.add_argument("--downloaders", type=int, default=8, help="parallel downloads per run")
    parser.add_argument("--seconds", type=int, default=8, help="length of a manifest round")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent manifest clients")
    parser.add_argument("--time-limit-s", type=int, default=1200, help="stop everything after")
    args = parser.parse_args()

    def stop(signum: int, _: object) -> None:
        raise SystemExit(f"stopped by signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, stop)
    signal.alarm(args.time_limit_s)
    procs = Processes()
    with ExitStack() as cleanup:
        tmp = Path(tempfile.mkdtemp(prefix="edgefleet-bench-serve-"))
        cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
        cleanup.callback(procs.stop_all)
        bench = Bench(args, tmp, procs)
        bench.start_control_plane()
        emit(bench.upload())
        nginx_url = bench.start_nginx()
        emit(bench.downloads(nginx_url))
        emit(bench.manifests(nginx_url))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        say("interrupted; every process started is stopped and the temp files removed")
        sys.exit(130)
