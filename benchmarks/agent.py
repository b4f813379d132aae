"""Benchmark: local inference on the device (``agent.serving``, ``agent.localapi``).

The reference sensor model is built the way the pipeline builds it, from the
committed weights (no training): float ONNX export, then static int8 QDQ
quantization calibrated on the recipe's calibration split. Inputs are real
sensor rows from the recipe's held-out generator. Sections, each printing one
JSON line per figure:

* ``in_process_overhead``: :meth:`ModelHost.infer` against a bare
  ``onnxruntime.InferenceSession.run`` (same options as fleetcore: one intra-
  and one inter-op thread) and against fleetcore's ``runtime.run``, in the
  same run; rounds interleave the three (rotating who goes first) and the
  median per-call time over rounds is reported, batch 1 and 32, int8 and FP32.
* ``local_api_latency``: a separate server process (``benchmarks._agent_server``,
  what a fleet-agent serving the model runs) on loopback TCP and on a Unix
  socket; one keep-alive client (stdlib ``http.client``, and the project's
  httpx ``agent.local.Client``) sends requests one at a time; p50/p99 per
  request against the p50 of an in-process ``ModelHost.infer`` of the same
  batch. Transports alternate in blocks. The first answer of each is checked
  against the in-process result.
* ``agent_rss``: VmRSS and VmHWM of that server process after it served, for
  the ONNX and the TFLite model; and, in one fresh process, the VmRSS after
  each import or step (numpy, onnxruntime, fleetcore, agent modules, model
  load, httpx, paho-mqtt), so the cost of each is visible.
* ``assignment_to_commit``: a real broker, control plane and agent on
  loopback; from a published assignment of a fresh 1 MB model to the agent's
  ``committed`` report (``benchmarks._agent_update``).

Each section is a function ``Context -> list[Figure]`` registered in
``SECTIONS``; ``main`` runs the chosen ones in order, so a new figure is one
more function and one more entry.

Usage: ``python -m benchmarks.agent [--rounds 15] [--calls 2000] [--requests 3000]
[--sections in_process_overhead,local_api_latency,agent_rss]``. Progress on stderr.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.serving import ModelHost, ModelInfo
from benchmarks._agent_http import ROOT, AgentServer, client_requests, stdlib_requests
from fleetcore.runtimes import load_model

BATCHES = (1, 32)
Figure = dict[str, Any]


def say(message: str) -> None:
    print(f"[agent] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Context:
    models: dict[str, Path]  # "sensor-int8" / "sensor-fp32" (ONNX), "sensor-int8-tflite"
    rows: npt.NDArray[np.float32]
    rounds: int
    calls: int
    requests: int
    workdir: Path

    def batch(self, size: int) -> dict[str, npt.NDArray[np.float32]]:
        return {"features": np.ascontiguousarray(self.rows[:size])}


def build_models(out: Path) -> dict[str, Path]:
    from models.sensor import recipe
    from models.sensor.data import generate
    from models.sensor.export import export_onnx
    from models.sensor.quantize import quantize_int8_static
    from models.sensor.tflite_build import ARTIFACTS, TFLITE_NAME, WEIGHTS_NAME
    from models.sensor.train import MLP

    fp32 = export_onnx(MLP.load(ARTIFACTS / WEIGHTS_NAME), out / "sensor-fp32.onnx")
    seed = recipe.split_seed(recipe.DEFAULT_SEED, "calibration")
    calibration, _ = generate(recipe.CALIBRATION_SAMPLES, seed=seed)
    int8 = quantize_int8_static(fp32, out / "sensor-int8.onnx", calibration)
    return {"sensor-int8": int8, "sensor-fp32": fp32, "sensor-int8-tflite": ARTIFACTS / TFLITE_NAME}


def _host(path: Path, fmt: str = "onnx") -> ModelHost:
    host = ModelHost()
    host.activate(path, fmt, ModelInfo("sensor", 1, "0" * 64, fmt))
    return host


# -- section: in-process overhead -------------------------------------------------------------


def in_process_overhead(ctx: Context) -> list[Figure]:
    import onnxruntime as ort

    figures = []
    for name in ("sensor-int8", "sensor-fp32"):
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        options.log_severity_level = 3
        session = ort.InferenceSession(
            str(ctx.models[name]), sess_options=options, providers=["CPUExecutionProvider"]
        )
        runtime, host = load_model(ctx.models[name], "onnx"), _host(ctx.models[name])
        for batch in BATCHES:
            feeds = ctx.batch(batch)
            want = session.run(["probabilities"], feeds)[0]
            np.testing.assert_array_equal(host.infer(feeds)["probabilities"], want)
            sides: dict[str, Callable[[], object]] = {
                "bare": functools.partial(session.run, ["probabilities"], feeds),
                "fleetcore": functools.partial(runtime.run, feeds),
                "host": functools.partial(host.infer, feeds),
            }
            per_call = _interleaved(sides, ctx.rounds, ctx.calls)
            bare, core, hosted = (per_call[k] for k in ("bare", "fleetcore", "host"))
            figures.append(
                {
                    "benchmark": "agent",
                    "figure": "in_process_overhead",
                    "model": name,
                    "batch": batch,
                    "bare_onnxruntime_us": round(bare, 3),
                    "fleetcore_runtime_run_us": round(core, 3),
                    "model_host_infer_us": round(hosted, 3),
                    "ratio": round(hosted / bare, 3),
                    "target_ratio": 1.05,
                    "ratio_fleetcore_run_vs_bare": round(core / bare, 3),
                    "ratio_host_vs_fleetcore_run": round(hosted / core, 3),
                    "rounds": ctx.rounds,
                    "calls_per_round": ctx.calls,
                    "statistic": "median over interleaved rounds of the mean per call",
                }
            )
            say(f"overhead {name} batch {batch}: {hosted / bare:.3f}x bare onnxruntime")
    return figures


def _interleaved(
    sides: dict[str, Callable[[], object]], rounds: int, calls: int
) -> dict[str, float]:
    names = list(sides)
    for fn in sides.values():  # warm up caches and allocators
        for _ in range(calls // 4):
            fn()
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = sides[name]
            start = time.perf_counter_ns()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter_ns() - start) / calls / 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


# -- section: local HTTP API latency -------------------------------------------------------------


def _in_process_p50_ms(host: ModelHost, feeds: dict[str, Any], count: int) -> float:
    latencies = []
    for _ in range(count):
        start = time.perf_counter_ns()
        host.infer(feeds)
        latencies.append((time.perf_counter_ns() - start) / 1e6)
    return statistics.median(latencies)


def local_api_latency(ctx: Context) -> list[Figure]:
    model = ctx.models["sensor-int8"]
    host = _host(model)
    sock = ctx.workdir / "agent.sock"
    server = AgentServer(model, "onnx", ["127.0.0.1:0", f"unix:{sock}"])
    figures = []
    try:
        transports = dict(zip(("tcp", "unix"), server.addresses, strict=True))
        for batch in BATCHES:
            feeds = ctx.batch(batch)
            want = host.infer(feeds)["probabilities"]
            body = json.dumps({"inputs": feeds["features"].tolist()}).encode()
            samples: dict[str, list[float]] = {name: [] for name in transports}
            block = max(ctx.requests // 10, 1)
            for address in transports.values():  # warm-up and answer check
                _, first = stdlib_requests(address, body, block)
                got = np.array(json.loads(first)["outputs"]["probabilities"], np.float32)
                np.testing.assert_array_equal(got, want)
            for _ in range(10):
                for name, address in transports.items():
                    samples[name] += stdlib_requests(address, body, block)[0]
            local_p50 = _in_process_p50_ms(host, feeds, ctx.requests)
            for name, latencies in samples.items():
                figures.append(_latency_figure(name, "http.client", batch, latencies, local_p50))
            if batch == 1:
                for name, address in transports.items():
                    latencies = client_requests(address, feeds["features"], ctx.requests)
                    figures.append(
                        _latency_figure(name, "agent.local.Client", batch, latencies, local_p50)
                    )
    finally:
        server.close()
    return figures


def _latency_figure(
    transport: str, client: str, batch: int, latencies: list[float], local_p50: float
) -> Figure:
    p50 = statistics.median(latencies)
    p99 = float(np.percentile(latencies, 99))
    say(f"local API {transport} {client} batch {batch}: p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    return {
        "benchmark": "agent",
        "figure": "local_api_latency",
        "model": "sensor-int8",
        "transport": transport,
        "client": client,
        "body": "json",
        "batch": batch,
        "p50_ms": round(p50, 4),
        "p99_ms": round(p99, 4),
        "in_process_p50_ms": round(local_p50, 4),
        "added_ms_p50": round(p50 - local_p50, 4),
        "target_added_ms_p50": 1.0,
        "requests": len(latencies),
    }


# -- section: memory ------------------------------------------------------------------------------

_STEPS_CHILD = """
import json, sys
from pathlib import Path
def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
steps = json.loads(sys.argv[1])
out = [["python", rss()]]
for label, code in steps:
    exec(code)
    out.append([label, rss()])
print(json.dumps(out))
"""


def agent_rss(ctx: Context) -> list[Figure]:
    mib = 1 << 20
    figures = []
    for name, fmt in (("sensor-int8", "onnx"), ("sensor-int8-tflite", "tflite")):
        server = AgentServer(ctx.models[name], fmt, ["127.0.0.1:0"])
        try:
            body = json.dumps({"inputs": ctx.batch(32)["features"].tolist()}).encode()
            stdlib_requests(server.addresses[0], body, ctx.requests)
            status = server.status()
        finally:
            server.close()
        figures.append(
            {
                "benchmark": "agent",
                "figure": "agent_rss",
                "model": name,
                "process": "python -m benchmarks._agent_server (agent.serving + agent.localapi)",
                "vm_rss_mib": round(status["VmRSS"] / mib, 1),
                "vm_hwm_mib": round(status["VmHWM"] / mib, 1),
                "target_mib": 64,
                "after_requests": ctx.requests,
            }
        )
        say(f"RSS serving {name}: {status['VmRSS'] / mib:.1f} MiB")
    model = str(ctx.models["sensor-int8"])
    steps = [
        ["import numpy", "import numpy"],
        ["import onnxruntime", "import onnxruntime"],
        ["import fleetcore (package: cryptography, trust)", "import fleetcore"],
        ["import fleetcore.runtimes", "import fleetcore.runtimes"],
        ["import agent.serving, agent.localapi", "import agent.serving, agent.localapi"],
        [
            "load + warm up the int8 model",
            f"h = agent.serving.ModelHost(); h.activate(Path({model!r}), 'onnx', "
            "agent.serving.ModelInfo('s', 1, '0' * 64, 'onnx'))",
        ],
        ["import httpx", "import httpx"],
        ["import paho.mqtt.client", "import paho.mqtt.client"],
    ]
    done = subprocess.run(
        [sys.executable, "-c", _STEPS_CHILD, json.dumps(steps)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    trace = json.loads(done.stdout)
    costs = {label: round((rss - trace[i][1]) / mib, 1) for i, (label, rss) in enumerate(trace[1:])}
    figures.append(
        {
            "benchmark": "agent",
            "figure": "rss_by_import",
            "python_interpreter_mib": round(trace[0][1] / mib, 1),
            "added_mib": costs,
            "total_mib": round(trace[-1][1] / mib, 1),
            "note": "VmRSS added by each step, in this order, in one fresh process",
        }
    )
    return figures


def assignment_to_commit(ctx: Context) -> list[Figure]:
    from benchmarks._agent_update import assignment_to_commit as measure

    return measure()


SECTIONS: dict[str, Callable[[Context], list[Figure]]] = {
    "in_process_overhead": in_process_overhead,
    "local_api_latency": local_api_latency,
    "agent_rss": agent_rss,
    "assignment_to_commit": assignment_to_commit,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (overhead)")
    parser.add_argument("--calls", type=int, default=2000, help="calls per side and round")
    parser.add_argument("--requests", type=int, default=3000, help="HTTP requests per figure")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        sys.exit(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    from models.sensor import recipe

    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-agent-") as tmp:
        workdir = Path(tmp)
        say("building the sensor model (int8 and FP32 ONNX) from the committed weights")
        ctx = Context(
            models=build_models(workdir),
            rows=recipe.heldout()[0][:64],
            rounds=args.rounds,
            calls=args.calls,
            requests=args.requests,
            workdir=workdir,
        )
        for name in chosen:
            for figure in SECTIONS[name](ctx):
                print(json.dumps(figure), flush=True)


if __name__ == "__main__":
    main()
