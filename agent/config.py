"""The agent's configuration: one TOML file, read once, never holding secrets.

Theory of operation. :func:`resolve_config_path` picks the file: ``--config``,
else ``$EDGEFLEET_AGENT_CONFIG``, else ``/etc/edgefleet/agent.toml``.
:func:`load_config` parses it into frozen dataclasses; a missing file means
all defaults (so ``fleet-agent enroll`` can create it). Unknown keys and
values of the wrong type are refused with :class:`~agent.errors.ConfigError`
naming the key, because a typo (``probation = 60``) silently falling back to a
default is worse than not starting. Every duration and size carries its unit
in its name.

Secrets never live here: the device key, device token and MQTT password are
files under ``data_dir/identity`` (mode 0600, directory 0700), written by
enrollment. ``enroll`` writes this file with :func:`save_config`; the daemon
only reads it (under systemd ``/etc`` is read-only to it).

Example::

    server = "https://fleet.example.com"
    data_dir = "/var/lib/edgefleet"
    transport = "auto"            # auto | mqtt | http
    # tls_ca_path = "/etc/edgefleet/ca.pem"

    [mqtt]
    keepalive_s = 60
    fallback_after_s = 30         # auto: poll over HTTP after the broker was down this long

    [http]
    wait_s = 30                   # long-poll wait for the desired state

    [local_api]
    listen = "127.0.0.1:8470"     # or "unix:/run/edgefleet/agent.sock"

    [update]
    probation_s = 300
    max_error_rate = 0.05
    max_latency_p95_ms = 250.0
    crash_loop_boots = 3

    [outbox]
    max_reports = 1000
    resend_s = 300                # send the newest report again after this long (0: never)

    [drift]
    enabled = true
    window_s = 60                 # clock-aligned summary windows
    capture_enabled = false       # reservoir sample of inputs, uploaded per window

    [telemetry]
    enabled = true
    window_s = 60                 # clock-aligned, like the drift windows
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.slots import atomic_write

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

DEFAULT_CONFIG_PATH = Path("/etc/edgefleet/agent.toml")
CONFIG_ENV = "EDGEFLEET_AGENT_CONFIG"
DEFAULT_DATA_DIR = Path("/var/lib/edgefleet")
TRANSPORTS = ("auto", "mqtt", "http")


@dataclass(frozen=True)
class MqttConfig:
    #: Broker URL override; empty means the one given at enrollment.
    url: str = ""
    keepalive_s: int = 60
    connect_timeout_s: float = 10.0
    #: auto transport: after the broker was unreachable this long, poll over HTTP.
    fallback_after_s: float = 30.0
    #: Longest wait between reconnection attempts (backoff doubles up to it).
    reconnect_max_s: float = 60.0


@dataclass(frozen=True)
class HttpConfig:
    #: Long-poll wait the server may hold a desired-state request.
    wait_s: int = 30
    #: Connect/read timeout of ordinary requests (the long poll adds wait_s).
    timeout_s: float = 10.0
    #: Longest wait between retries after a failed request.
    retry_max_s: float = 60.0


@dataclass(frozen=True)
class LocalApiConfig:
    #: "host:port" or "unix:/path/to/socket"; empty disables the local API.
    listen: str = "127.0.0.1:8470"


@dataclass(frozen=True)
class ServingConfig:
    threads: int = 1


@dataclass(frozen=True)
class UpdateConfig:
    probation_s: float = 300.0
    #: How often probation reads the health counters (and records progress).
    probation_check_s: float = 5.0
    #: Health rules apply once this many inferences ran during probation.
    probation_min_inferences: int = 20
    max_error_rate: float = 0.05
    max_latency_p95_ms: float = 250.0
    #: More unclean restarts than this while the new model is loading or on
    #: probation is a crash loop: revert.
    crash_loop_boots: int = 3
    download_connect_timeout_s: float = 10.0
    download_read_timeout_s: float = 60.0
    download_attempts: int = 5
    download_backoff_initial_s: float = 1.0
    download_backoff_max_s: float = 60.0


@dataclass(frozen=True)
class OutboxConfig:
    max_reports: int = 1000
    #: Send the newest confirmed report again after this long without a new one
    #: (same seq, so it is stored once); 0 turns it off.
    resend_s: float = 300.0


@dataclass(frozen=True)
class DriftConfig:
    """The drift probe, its queue and the optional input capture (:mod:`agent.probe`)."""

    enabled: bool = True
    #: Window length; windows start at multiples of it (unix seconds), 1..86400.
    window_s: int = 60
    #: Queued summaries kept while offline (oldest dropped first, counted).
    max_queued: int = 2000
    max_queued_bytes: int = 32 * 1024 * 1024
    #: The signed length of a drift reference is also capped here.
    max_reference_bytes: int = 16 * 1024 * 1024
    #: Recent inference request ids kept for POST /v1/feedback.
    feedback_requests: int = 10000
    capture_enabled: bool = False
    #: Probability that an inferred row is offered to the window's reservoir.
    capture_rate: float = 0.01
    capture_max_rows: int = 1000
    capture_max_bytes: int = 1024 * 1024
    #: A window's sample is uploaded this long after the window ends, so
    #: feedback that arrives late still fills its labels.
    capture_label_grace_s: float = 60.0
    max_queued_captures: int = 16


@dataclass(frozen=True)
class TelemetryConfig:
    """Health telemetry per clock-aligned window (:mod:`agent.telemetry`)."""

    enabled: bool = True
    window_s: int = 60
    max_queued: int = 2000


@dataclass(frozen=True)
class AgentConfig:
    server: str = ""
    data_dir: Path = DEFAULT_DATA_DIR
    transport: str = "auto"
    #: CA bundle for the control plane and broker; empty: the system store.
    tls_ca_path: Path | None = None
    log_level: str = "info"
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    local_api: LocalApiConfig = field(default_factory=LocalApiConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)


_SECTIONS: dict[str, type[Any]] = {
    "mqtt": MqttConfig,
    "http": HttpConfig,
    "local_api": LocalApiConfig,
    "serving": ServingConfig,
    "update": UpdateConfig,
    "outbox": OutboxConfig,
    "drift": DriftConfig,
    "telemetry": TelemetryConfig,
}
_TOP = ("server", "data_dir", "transport", "tls_ca_path", "log_level")


def resolve_config_path(cli: Path | None = None) -> Path:
    if cli is not None:
        return cli
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG_PATH


def _coerce(where: str, value: Any, default: Any) -> Any:
    """Check ``value`` against the type of ``default``; ints are accepted as floats."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"{where} must be {type(default).__name__}, not {value!r:.60}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        raise ConfigError(f"{where} must not be negative")
    return value


def _section(name: str, cls: type[Any], raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}] must be a table")
    defaults = cls()
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in [{name}]")
    values = {k: _coerce(f"{name}.{k}", v, getattr(defaults, k)) for k, v in raw.items()}
    return cls(**values)


def parse_config(raw: dict[str, Any]) -> AgentConfig:
    unknown = sorted(set(raw) - set(_TOP) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in the agent configuration")
    base = AgentConfig()
    top: dict[str, Any] = {}
    for key in _TOP:
        if key in raw:
            default = getattr(base, key)
            text = _coerce(key, raw[key], "" if default is None else str(default))
            top[key] = text
    sections = {name: _section(name, cls, raw.get(name, {})) for name, cls in _SECTIONS.items()}
    config = AgentConfig(
        server=str(top.get("server", base.server)).rstrip("/"),
        data_dir=Path(top.get("data_dir", base.data_dir)),
        transport=str(top.get("transport", base.transport)),
        tls_ca_path=Path(top["tls_ca_path"]) if top.get("tls_ca_path") else None,
        log_level=str(top.get("log_level", base.log_level)),
        **sections,
    )
    validate(config)
    return config


def validate(config: AgentConfig) -> None:
    if config.transport not in TRANSPORTS:
        raise ConfigError(f"transport must be one of {', '.join(TRANSPORTS)}")
    if config.server and not config.server.startswith(("http://", "https://")):
        raise ConfigError("server must be an http:// or https:// URL")
    if not config.data_dir.is_absolute():
        raise ConfigError("data_dir must be an absolute path")
    if config.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("log_level must be debug, info, warning or error")
    listen = config.local_api.listen
    if listen and not listen.startswith("unix:/"):
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError("local_api.listen must be host:port or unix:/absolute/path")
    update = config.update
    if not 0.0 <= update.max_error_rate <= 1.0:
        raise ConfigError("update.max_error_rate must be between 0 and 1")
    if update.download_attempts < 1 or config.serving.threads < 1:
        raise ConfigError("update.download_attempts and serving.threads must be at least 1")
    if update.probation_check_s <= 0 or config.outbox.max_reports < 1:
        raise ConfigError("update.probation_check_s and outbox.max_reports must be positive")
    if config.outbox.resend_s < 0:
        raise ConfigError("outbox.resend_s must be 0 (off) or positive")
    _validate_windows(config.drift, config.telemetry)


def _validate_windows(drift: DriftConfig, telemetry: TelemetryConfig) -> None:
    for name, window in (("drift", drift.window_s), ("telemetry", telemetry.window_s)):
        if not 1 <= window <= 86400:
            raise ConfigError(f"{name}.window_s must be between 1 and 86400")
    if not 0.0 <= drift.capture_rate <= 1.0:
        raise ConfigError("drift.capture_rate must be between 0 and 1")
    positive = {
        "drift.max_queued": drift.max_queued,
        "drift.max_queued_bytes": drift.max_queued_bytes,
        "drift.max_reference_bytes": drift.max_reference_bytes,
        "drift.feedback_requests": drift.feedback_requests,
        "drift.capture_max_rows": drift.capture_max_rows,
        "drift.capture_max_bytes": drift.capture_max_bytes,
        "drift.max_queued_captures": drift.max_queued_captures,
        "telemetry.max_queued": telemetry.max_queued,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be at least 1")


def load_config(path: Path) -> AgentConfig:
    """Read ``path``; a missing file yields the defaults."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return AgentConfig()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    try:
        return parse_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    # JSON string escapes are a subset of TOML basic-string escapes.
    return json.dumps(str(value), ensure_ascii=False)


def dump_config(config: AgentConfig) -> str:
    """The configuration as TOML (every key, so the file documents the defaults)."""
    lines = ["# edgefleet device agent. Secrets live under data_dir/identity, never here.", ""]
    for key in _TOP:
        value = getattr(config, key)
        if value is None:
            lines.append(f'# {key} = ""')
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for name in _SECTIONS:
        section = getattr(config, name)
        lines += ["", f"[{name}]"]
        lines += [f"{f.name} = {_toml_value(getattr(section, f.name))}" for f in fields(section)]
    return "\n".join(lines) + "\n"


def save_config(config: AgentConfig, path: Path) -> None:
    validate(config)
    try:
        atomic_write(path, dump_config(config).encode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc


def with_overrides(config: AgentConfig, **changes: Any) -> AgentConfig:
    """A copy with top-level fields changed (``server``, ``data_dir``...)."""
    updated = replace(config, **changes)
    validate(updated)
    return updated


__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_DATA_DIR",
    "TRANSPORTS",
    "AgentConfig",
    "DriftConfig",
    "HttpConfig",
    "LocalApiConfig",
    "MqttConfig",
    "OutboxConfig",
    "ServingConfig",
    "TelemetryConfig",
    "UpdateConfig",
    "dump_config",
    "load_config",
    "parse_config",
    "resolve_config_path",
    "save_config",
    "validate",
    "with_overrides",
]
