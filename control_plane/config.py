"""Control-plane settings: environment variables (``EDGEFLEET_*``) over an optional TOML file.

Nothing is read at import time: :func:`load_settings` builds a
:class:`Settings` when the server or a command starts. Nested groups use a
double underscore in the environment, e.g. ``EDGEFLEET_VALIDATION__MAX_ACCURACY_DROP``.

Placeholder secrets are refused at load: a database password, key
passphrase or MQTT password such as ``changethis`` stops the server rather
than running it insecurely. Secrets are :class:`~pydantic.SecretStr`, so they
never appear in a ``repr`` or a log line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from control_plane.errors import ConfigurationError

PLACEHOLDER_SECRETS = frozenset(
    {"changethis", "changeme", "change-me", "secret", "password", "admin", "postgres", "test"}
)


class ValidationSettings(BaseModel):
    """Thresholds of the validation gate; a model that misses one stays draft."""

    max_accuracy_drop: float = Field(0.02, ge=0, le=1, description="vs the float parent")
    min_accuracy: float | None = Field(None, ge=0, le=1)
    max_latency_p95_ms: float | None = Field(50.0, gt=0, description="single-row inference")
    max_size_bytes: int | None = Field(None, gt=0)
    latency_runs: int = Field(200, ge=10, le=100_000)
    smoke_vectors: int = Field(8, ge=1, le=64)
    smoke_atol: float = Field(1e-2, ge=0)
    smoke_rtol: float = Field(0.0, ge=0)


class RetrainingSettings(BaseModel):
    """Retraining triggers: how often the worker looks for due attempts, and what it may run."""

    tick_s: float = Field(5.0, gt=0, le=3600, description="seconds between retry checks")
    batch: int = Field(20, ge=1, le=1000, description="triggers leased per check")
    allow_commands: bool = Field(
        False, description="accept policies with local 'command' actions (admin only)"
    )


MQTT_SCHEMES = ("mqtt", "mqtts")


def _check_mqtt_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in MQTT_SCHEMES or not parts.hostname:
        raise ValueError("must look like mqtt://host:1883 or mqtts://host:8883")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials; use mqtt.username and mqtt.password")
    _ = parts.port  # raises ValueError for a port out of range
    return value


class MqttSettings(BaseModel):
    """The broker devices talk to.

    Without ``url`` the control plane runs its own broker (amqtt, see
    :mod:`control_plane.mqtt.embedded`) unless ``embedded`` is off; then it
    speaks HTTP only.
    """

    url: str | None = Field(None, description="the control plane's broker, mqtt:// or mqtts://")
    device_url: str | None = Field(None, description="the broker URL devices are told; default url")
    username: str = Field("control-plane", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    password: SecretStr | None = Field(None, description="the control plane's broker password")
    password_file: Path | None = Field(
        None, description="Mosquitto password file kept in sync with enrolled devices"
    )
    broker_pid_file: Path | None = Field(
        None, description="Mosquitto's pid file: SIGHUP after the password file changes"
    )
    shared_group: str = Field(
        "control-plane",
        pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63})?$",
        description="MQTT 5 shared-subscription group ('' subscribes plainly)",
    )
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="auto: MQTT 5 when the broker offers it, else 3.1.1"
    )
    keepalive_s: int = Field(30, ge=5, le=300)
    session_expiry_s: int = Field(
        3600, ge=0, le=30 * 86_400, description="MQTT 5: how long the broker keeps our session"
    )
    reconnect_max_s: int = Field(30, ge=1, le=600, description="longest wait between reconnects")
    tls_ca_file: Path | None = Field(None, description="CA bundle for mqtts:// (default: system)")
    ingest_queue_messages: int = Field(10_000, ge=10, le=1_000_000)
    ingest_batch_messages: int = Field(500, ge=1, le=10_000)
    embedded: bool = Field(True, description="without url: run an MQTT broker (amqtt) in-process")
    embedded_bind: str = Field(
        "127.0.0.1",
        pattern=r"^[A-Za-z0-9.:_-]{1,253}$",
        description="the embedded broker's listen address; 0.0.0.0 for devices on the network",
    )
    embedded_port: int = Field(1883, ge=0, le=65535, description="0: any free port (tests)")

    _urls = field_validator("url", "device_url")(_check_mqtt_url)

    @property
    def devices_url(self) -> str | None:
        return self.device_url or self.url

    @property
    def runs_embedded(self) -> bool:
        """Whether this control plane runs the embedded broker."""
        return self.url is None and self.embedded


class DriftSettings(BaseModel):
    """Fleet drift analysis: how summaries are merged, tested and watched."""

    bucket_s: int = Field(
        3600, ge=1, le=86_400, description="clock buckets merged into evidence windows"
    )
    min_samples: int = Field(
        80, ge=16, le=10_000_000, description="samples an evidence window needs to be tested"
    )
    persist_k: int = Field(3, ge=1, le=100, description="drifted in k of the last m windows")
    persist_m: int = Field(4, ge=1, le=100)
    check_interval_s: float = Field(
        60.0, ge=0, le=86_400, description="how often the monitor checks for drift (0: never)"
    )
    lookback_s: int = Field(
        86_400, ge=60, le=90 * 86_400, description="windows a check or report looks back on"
    )
    quality_min_samples: int = Field(
        500, ge=10, le=10_000_000, description="rollout quality gate: outputs needed per release"
    )


class TelemetrySettings(BaseModel):
    """Device telemetry and drift summaries: retention, rollups, limits."""

    raw_retention_days: float = Field(
        7.0, gt=0, le=3650, description="raw windows older than this are rolled into hours"
    )
    hourly_retention_days: float = Field(
        90.0, gt=0, le=3650, description="hourly rollups older than this are rolled into days"
    )
    rollup_interval_s: float = Field(
        300.0, ge=0, le=86_400, description="seconds between retention passes (0: never)"
    )
    max_future_s: float = Field(
        86_400.0,
        ge=0,
        le=30 * 86_400,
        description="windows starting later than now + this are refused",
    )
    max_capture_bytes: int = Field(
        1 << 20,
        gt=0,
        le=1 << 30,
        description="largest data capture (.npz) a device may upload; max_request_bytes caps "
        "it too (the agent's [drift] capture_max_bytes defaults to the same 1 MiB)",
    )


class MetricsSettings(BaseModel):
    """``GET /metrics`` (Prometheus)."""

    public: bool = Field(
        False, description="serve /metrics without a token (default: viewer token)"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EDGEFLEET_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Field(Path("edgefleet-data"), description="SQLite file, artifacts, keys")
    database_url: str | None = Field(None, description="default: SQLite in data_dir")
    artifact_dir: Path | None = Field(None, description="default: data_dir/artifacts")
    keys_dir: Path | None = Field(
        None, description="from 'fleetctl keys init'; default data_dir/trust"
    )
    key_passphrase_env: str = Field(
        "EDGEFLEET_KEY_PASSPHRASE", description="variable holding the keys' passphrase"
    )
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_upload_bytes: int = Field(1 << 30, gt=0, description="largest accepted upload, bytes")
    max_request_bytes: int = Field(
        1 << 20,
        gt=0,
        description="largest accepted request body except artifact uploads, bytes",
    )
    release_expires_days: int = Field(365, ge=1, le=3650)
    token_cache_s: float = Field(
        2.0, ge=0, le=300, description="seconds a verified token is reused; 0 checks every request"
    )
    public_artifacts: bool = Field(
        False, description="serve artifacts without a token (they are verified by hash anyway)"
    )
    assignment_expires_days: int = Field(
        30, ge=1, le=365, description="lifetime of director assignments; renewed at half"
    )
    assignment_renew_check_s: float = Field(
        600.0, gt=0, le=86_400, description="how often assignments due for renewal are re-signed"
    )
    desired_check_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="how often a long-poll looks for assignments made by other workers",
    )
    rollout_tick_s: float = Field(
        1.0, gt=0, le=60, description="how often each process drives the rollouts it holds"
    )
    rollout_lease_s: float = Field(
        30.0,
        ge=2,
        le=3600,
        description="a replica's hold on a rollout; another takes over this long after it dies",
    )
    validation: ValidationSettings = ValidationSettings()
    drift: DriftSettings = DriftSettings()
    mqtt: MqttSettings = MqttSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    metrics: MetricsSettings = MetricsSettings()
    retraining: RetrainingSettings = RetrainingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = os.environ.get("EDGEFLEET_CONFIG")
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if toml:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=Path(toml)),)
        return sources

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        password = urlsplit(self.database_url).password if self.database_url else None
        if password is not None and password.lower() in PLACEHOLDER_SECRETS:
            raise ValueError("the database password is a placeholder; set a real one")
        passphrase = os.environ.get(self.key_passphrase_env)
        if passphrase is not None and passphrase.lower() in PLACEHOLDER_SECRETS:
            raise ValueError(f"{self.key_passphrase_env} is a placeholder; set a real passphrase")
        mqtt_password = self.mqtt.password
        if mqtt_password is not None and (
            mqtt_password.get_secret_value().lower() in PLACEHOLDER_SECRETS
            or not mqtt_password.get_secret_value()
        ):
            raise ValueError("mqtt.password is a placeholder; set a real one")
        if (self.mqtt.url or self.mqtt.password_file) and mqtt_password is None:
            raise ValueError("mqtt.password is needed with mqtt.url or mqtt.password_file")
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'edgefleet.db'}"

    @property
    def artifacts_path(self) -> Path:
        return self.artifact_dir or self.data_dir / "artifacts"

    @property
    def keys_path(self) -> Path:
        return self.keys_dir or self.data_dir / "trust"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, an optional TOML file and explicit overrides.

    A given ``config_file`` is also put into ``EDGEFLEET_CONFIG``, on purpose:
    uvicorn's worker processes inherit the environment and build their own
    settings from it, so every worker reads the same file.

    Raises:
        ConfigurationError: a value is invalid or a secret is a placeholder.
    """
    from pydantic import ValidationError  # noqa: PLC0415 - keep import time small

    if config_file is not None:
        os.environ["EDGEFLEET_CONFIG"] = str(config_file)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigurationError(f"{where}: {first['msg']}") from exc


__all__ = [
    "PLACEHOLDER_SECRETS",
    "MetricsSettings",
    "MqttSettings",
    "RetrainingSettings",
    "Settings",
    "TelemetrySettings",
    "ValidationSettings",
    "load_settings",
]
