"""Simulated devices that publish a backlog of telemetry and drift summaries (QoS 1).

Theory of operation: the parent splits the devices among a few processes;
each process connects its devices one after the other, each with its own
credential (username = device id, so the broker's ACL applies), publishes
that device's share of windows alternately on its telemetry and drift
topics with many messages in flight, waits until the broker has acknowledged
every one, and disconnects. Payloads are real: canonical JSON telemetry
reports and encoded drift summaries against the release's reference, one
per window, with the device's own increasing sequence numbers.

Run as ``python -m benchmarks._ingest_publish HOST PORT SPEC_JSON``; prints
one JSON line ``{"published": n, "seconds": s}``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from fleetcore.drift.encoding import encode
from fleetcore.drift.summary import DriftAccumulator, DriftCounts, DriftSummary, WindowKey
from fleetcore.protocol import Channel, topic
from fleetcore.telemetry import LATENCY_BUCKETS, TelemetryReport
from tests.unit.control_plane.telemetry.support import MODEL, REFERENCE

IN_FLIGHT = 1000
#: A day ago on the hour: inside raw retention, and every window is in the past.
T0 = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
_START = int(T0.timestamp())


def body() -> DriftCounts:
    acc = DriftAccumulator(REFERENCE)
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(64, 2))
    acc.update(rng.normal(size=(64, 3)), np.exp(logits) / np.exp(logits).sum(1, keepdims=True))
    return acc.take()


def payloads(device: str, windows: int, release: int) -> list[tuple[str, bytes]]:
    counts = body()
    buckets = [0] * LATENCY_BUCKETS
    buckets[30], buckets[34] = 50, 14
    out: list[tuple[str, bytes]] = []
    drift_topic, telemetry_topic = topic(device, Channel.DRIFT), topic(device, Channel.TELEMETRY)
    for seq in range(1, windows + 1):
        start = _START + 60 * seq
        report = TelemetryReport(
            device=device,
            seq=seq,
            time=T0,
            window_start=start,
            window_s=60,
            model=MODEL,
            release=release,
            inferences=64,
            errors=0,
            input_errors=0,
            latency_buckets=tuple(buckets),
            cpu_percent=12.0,
            rss_bytes=50 << 20,
            disk_free_bytes=8 << 30,
        )
        key = WindowKey(device, MODEL, release, REFERENCE.digest(), start, 60, seq)
        out.append((telemetry_topic, report.encode()))
        out.append((drift_topic, encode(DriftSummary(key, counts))))
    return out


class Publisher:
    def __init__(self, host: str, port: int, device: str, password: str) -> None:
        self.done = threading.Condition()
        self.acked = 0
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"bench-{device}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.username_pw_set(device, password)
        self.client.max_inflight_messages_set(IN_FLIGHT)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.client.connect(host, port, keepalive=60)
        self.client.loop_start()

    def _on_publish(self, _c: Any, _u: Any, _mid: int, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            raise SystemExit(f"the broker refused a message: {reason}")
        with self.done:
            self.acked += 1
            self.done.notify_all()

    def publish_all(self, messages: list[tuple[str, bytes]]) -> None:
        for name, payload in messages:
            self.client.publish(name, payload, qos=1)
        with self.done:
            if not self.done.wait_for(lambda: self.acked >= len(messages), timeout=600):
                raise SystemExit(f"only {self.acked} of {len(messages)} acknowledged")
        self.client.disconnect()
        self.client.loop_stop()


def main(host: str, port: int, spec: dict[str, Any]) -> None:
    prepared = [
        (device, password, payloads(device, spec["windows"], spec["release"]))
        for device, password in spec["devices"]
    ]
    started = time.perf_counter()
    published = 0
    for device, password, messages in prepared:
        Publisher(host, port, device, password).publish_all(messages)
        published += len(messages)
    seconds = time.perf_counter() - started
    print(json.dumps({"published": published, "seconds": round(seconds, 3)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]))
