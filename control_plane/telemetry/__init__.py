"""Device telemetry and drift summaries: ingestion, retention, captures and ``/metrics``.

* :mod:`.ingest`: one code path for MQTT and HTTP; every refusal counted by reason;
* :mod:`.rollup`: raw windows into hourly and daily rollups, crash-safe;
* :mod:`.captures`: ``.npz`` reservoir samples stored as dataset artifacts;
* :mod:`.metrics`: the Prometheus registry behind ``GET /metrics``;
* :mod:`.service`: the pieces wired together (:func:`build_telemetry`).
"""

from control_plane.telemetry.service import TelemetryServices, build_telemetry

__all__ = ["TelemetryServices", "build_telemetry"]
