"""A simulated condition-monitoring application: what runs beside the agent on a device.

Theory of operation: every tick it generates a batch of motor readings with
:func:`models.sensor.data.generate`, asks the agent's local inference API for
predictions (``POST /v1/infer``, JSON), and, for a share of the predictions,
reports the true label back (``POST /v1/feedback``) as a maintenance
technician's verdict would. A control file, read once a second, sets the
:class:`~models.sensor.data.Drift` knobs, so a demo or a test can make part of
a fleet drift while it runs. Only the standard library talks HTTP, so the
application needs nothing beyond ``edgefleet[models]``.

    python -m models.sensor.app --api 127.0.0.1:8123 --rate 200 --control drift.json

The control file holds ``{"mean_shift": 1.5, "scale": 1.3, "new_regime": 0.3}``
(any subset; missing or unreadable means no drift). The application runs until
interrupted, or for ``--seconds``; a failed request is counted and retried on
the next tick (the agent may be installing a model), never fatal.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.sensor.data import CLASS_NAMES, Drift, generate

_TICK_S = 0.1


@dataclass
class Counts:
    requests: int = 0
    rows: int = 0
    failures: int = 0
    feedback: int = 0
    last_error: str = ""
    drift: dict[str, float] = field(default_factory=dict)


def read_drift(path: Path | None) -> Drift:
    if path is None:
        return Drift()
    try:
        knobs = json.loads(path.read_text())
        return Drift(
            mean_shift=float(knobs.get("mean_shift", 0.0)),
            scale=float(knobs.get("scale", 1.0)),
            new_regime=float(knobs.get("new_regime", 0.0)),
        )
    except (OSError, ValueError, TypeError, AttributeError):
        return Drift()


class LocalApi:
    """A keep-alive JSON client of the agent's local API on TCP."""

    def __init__(self, address: str, timeout_s: float = 5.0) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port, self.timeout_s = host or "127.0.0.1", int(port), timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode()
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.timeout_s
                )
            try:
                self._conn.request("POST", path, data, {"Content-Type": "application/json"})
                response = self._conn.getresponse()
                answer = json.loads(response.read() or b"{}")
                return response.status, answer if isinstance(answer, dict) else {}
            except (OSError, http.client.HTTPException, ValueError):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def run(args: argparse.Namespace) -> Counts:
    api = LocalApi(args.api)
    counts = Counts()
    rng = np.random.default_rng(args.seed)
    batch = max(1, round(args.rate * _TICK_S))
    drift, drift_read = Drift(), 0.0
    stop = time.monotonic() + args.seconds if args.seconds else float("inf")
    tick = 0
    while time.monotonic() < stop:
        started = time.monotonic()
        if started - drift_read >= 1.0:
            drift, drift_read = read_drift(args.control), started
            counts.drift = {"mean_shift": drift.mean_shift, "scale": drift.scale}
        x, y = generate(batch, seed=args.seed * 1_000_003 + tick, drift=drift)
        tick += 1
        try:
            status, answer = api.post("/v1/infer", {"inputs": {args.input: x.tolist()}})
        except (OSError, http.client.HTTPException, ValueError) as exc:
            status, answer = 0, {"error": {"message": str(exc)}}
        counts.requests += 1
        if status != 200:
            counts.failures += 1
            counts.last_error = str(answer.get("error", {}).get("message", status))[:200]
        else:
            counts.rows += batch
            request_id = answer.get("request_id")
            if request_id and rng.random() < args.feedback:
                # One label per row of the request, by class name, as a technician would.
                labels: Any = [CLASS_NAMES[int(v)] for v in y]
                body = {"request_id": request_id, "label": labels[0] if batch == 1 else labels}
                done, _ = api.post("/v1/feedback", body)
                counts.feedback += done == 200
        time.sleep(max(0.0, _TICK_S - (time.monotonic() - started)))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", required=True, help="the agent's local API, HOST:PORT")
    parser.add_argument("--input", default="features", help="the model's input name")
    parser.add_argument("--rate", type=float, default=100.0, help="readings per second")
    parser.add_argument("--feedback", type=float, default=0.2, help="share of requests labelled")
    parser.add_argument("--control", type=Path, help="JSON file with the drift knobs")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after this long")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        counts = run(args)
    except KeyboardInterrupt:
        return 0
    print(json.dumps(vars(counts)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
