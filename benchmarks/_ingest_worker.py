"""One control-plane worker of the ingestion benchmark: the real MQTT bridge, in its own process.

Theory of operation: the parent starts one process per worker, as
``fleetctl serve --workers N`` does; each builds the control plane's services
from the settings it is given (:func:`control_plane.main.build_services`),
claims its worker slot (so its MQTT client id, and with it its persistent
session, is stable) and starts :class:`~control_plane.mqtt.bridge.MqttBridge`.
With a ``shared_group`` the workers split the backlog through an MQTT 5
shared subscription, each draining the messages queued for its own session.

Protocol with the parent, one JSON line each way: the worker prints
``{"connected": slot}`` once its bridge is connected; on any line on stdin it
stops the bridge (after the subscriptions' SUBACK when ``prime`` is set) and
prints its ingestion counters ``{"received": n, "duplicated": n, "dropped": n}``.

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
    bridge = MqttBridge(
        settings.mqtt,
        settings.data_dir / "mqtt",
        services.store,
        fleet.director,
        fleet.ingest,
        services.clock,
    )
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
    }
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
