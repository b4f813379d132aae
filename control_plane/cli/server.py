"""``fleetctl serve`` and the commands that work on the server host itself."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Annotated

import typer

from control_plane.cli._common import err_console, one_line_errors

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", metavar="FILE", help="TOML settings file (EDGEFLEET_* variables win)."
    ),
]


@one_line_errors
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
    migrate: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Apply database migrations first.")
    ] = True,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Worker processes (default: one per CPU, at most 4; "
            "one with the embedded MQTT broker).",
        ),
    ] = None,
) -> None:
    """Run the control plane with uvicorn.

    Defaults need no setup: SQLite and artifacts under ./edgefleet-data, and an
    embedded MQTT broker on 127.0.0.1:1883 (one worker process) unless
    EDGEFLEET_MQTT__URL names a broker. Set EDGEFLEET_DATABASE_URL for PostgreSQL.
    Create the signing keys with 'fleetctl keys init DATA_DIR/trust' and the
    first admin token with 'fleetctl token create NAME --role admin --local'.
    """
    import uvicorn  # noqa: PLC0415 - only the server needs it
    from uvicorn.config import LOGGING_CONFIG  # noqa: PLC0415

    from control_plane.config import load_settings  # noqa: PLC0415
    from control_plane.db.migrate import upgrade  # noqa: PLC0415
    from control_plane.errors import ConfigurationError  # noqa: PLC0415

    settings = load_settings(config)
    if settings.mqtt.runs_embedded:
        # The embedded broker lives in one process; several workers need mqtt.url.
        if workers is not None and workers > 1:
            raise ConfigurationError(
                "the embedded MQTT broker runs in one process: use --workers 1, or set "
                "mqtt.url (EDGEFLEET_MQTT__URL) to an external broker to run several workers"
            )
        workers = 1
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if migrate:
        upgrade(settings.db_url)
    if not (settings.keys_path / "root").is_dir():
        err_console.print(
            f"[yellow]warning:[/yellow] no keys in {settings.keys_path}: releases cannot be "
            f"signed until you run 'fleetctl keys init {settings.keys_path}'"
        )
    workers = workers or min(os.cpu_count() or 1, 4)
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # /metrics then adds up every worker's counters, not only the answering one's.
        metrics_dir = settings.data_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    # The control plane's own loggers (edgefleet.*) print beside uvicorn's.
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["edgefleet"] = {
        "handlers": ["default"],
        "level": "INFO",
        "propagate": False,
    }
    uvicorn.run(
        "control_plane.main:create_app_from_env",
        log_config=log_config,
        factory=True,
        host=host or settings.host,
        port=settings.port if port is None else port,
        log_level="info",
        access_log=access_log,
        server_header=False,
        workers=workers,
    )
