"""One control-plane worker of the ingestion benchmark: the real MQTT bridge, in its own process.

Theory of operation: the parent starts one process per worker, as
``fleetctl serve --workers N`` does; each builds the control plane's services
from the settings it is given (:func:`control_plane.main.build_services`),
claims its worker slot (so its MQTT client id, and with it its persistent
session, is stable) and starts :class:`~control_plane.mqtt.bridge.MqttBridge`.
With a ``shared_group`` the workers split the backlog through an MQTT 5
shared subscription, each draining the messages queued for its own session.

Protocol with the parent, JSON lines out, any line in: the worker prints
``{"ready": true}`` once built (imports and start-up stay off the clock);
given a line it starts the bridge and prints ``{"connected": slot}``; given
another it stops the bridge and prints its ingestion counters
``{"received": n, "duplicated": n, "dropped": n, "store_ms": n}`` (time spent
parsing and storing batches, the rest being MQTT and waiting).

Run as ``python -m benchmarks._ingest_worker SETTINGS_JSON``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from control_plane.config import Settings
from control_plane.main import build_services
from control_plane.mqtt.bridge import MqttBridge
from control_plane.services import Services


def _counter(services: Services, name: str) -> int:
    assert services.telemetry is not None
    registry = services.telemetry.metrics.registry
    return int(sum(s.value for m in registry.collect() for s in m.samples if s.name == name))


def main(spec: dict[str, Any]) -> None:
    services = build_services(Settings(**spec))
    fleet = services.fleet
    assert fleet is not None
    settings = services.settings
    busy = [0.0]  # seconds spent parsing and storing batches (the rest: MQTT and waiting)
    store_batch = fleet.ingest.mqtt

    def timed(batch: Any) -> None:
        started = time.perf_counter()
        try:
            store_batch(batch)
        finally:
            busy[0] += time.perf_counter() - started

    fleet.ingest.mqtt = timed  # type: ignore[method-assign]
    bridge = MqttBridge(
        settings.mqtt,
        settings.data_dir / "mqtt",
        services.store,
        fleet.director,
        fleet.ingest,
        services.clock,
    )
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    bridge.start()
    if not bridge.connected.wait(30):
        raise SystemExit("the bridge did not connect")
    assert bridge.slot is not None
    print(json.dumps({"connected": bridge.slot.index}), flush=True)
    sys.stdin.readline()
    time.sleep(0.2)  # a SUBACK or a last acknowledgement still on its way
    bridge.stop()
    counts = {
        "received": _counter(services, "edgefleet_ingest_received_total"),
        "duplicated": _counter(services, "edgefleet_ingest_duplicates_total"),
        "dropped": _counter(services, "edgefleet_ingest_dropped_total"),
        "store_ms": round(1000 * busy[0]),
    }
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
