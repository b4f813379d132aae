"""Control-plane settings: defaults, environment, TOML file, refused placeholders."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.config import load_settings
from control_plane.errors import ConfigurationError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("EDGEFLEET_"):
            monkeypatch.delenv(key)


def test_embedded_defaults() -> None:
    settings = load_settings()
    assert settings.db_url == "sqlite:///edgefleet-data/edgefleet.db"
    assert settings.artifacts_path == Path("edgefleet-data/artifacts")
    assert settings.keys_path == Path("edgefleet-data/trust")


def test_environment_and_nested_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFLEET_DATA_DIR", "/srv/edgefleet")
    monkeypatch.setenv("EDGEFLEET_VALIDATION__MAX_ACCURACY_DROP", "0.05")
    settings = load_settings()
    assert settings.db_url == "sqlite:////srv/edgefleet/edgefleet.db"
    assert settings.validation.max_accuracy_drop == 0.05


def test_toml_file_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "server.toml"
    config.write_text("port = 9000\nmax_upload_bytes = 1000\n[validation]\nmin_accuracy = 0.9\n")
    monkeypatch.setenv("EDGEFLEET_PORT", "9100")
    monkeypatch.setenv("EDGEFLEET_CONFIG", str(config))  # what load_settings(config) sets
    settings = load_settings()
    assert settings.port == 9100
    assert settings.max_upload_bytes == 1000
    assert settings.validation.min_accuracy == 0.9


@pytest.mark.parametrize("password", ["changethis", "changeme", "secret", "Password"])
def test_placeholder_database_password_is_refused(password: str) -> None:
    with pytest.raises(ConfigurationError, match="placeholder"):
        load_settings(database_url=f"postgresql://edgefleet:{password}@db/edgefleet")


def test_placeholder_key_passphrase_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFLEET_KEY_PASSPHRASE", "changethis")
    with pytest.raises(ConfigurationError, match="EDGEFLEET_KEY_PASSPHRASE"):
        load_settings()


@pytest.mark.parametrize(("field", "value"), [("port", -1), ("max_upload_bytes", 0), ("nope", 1)])
def test_invalid_values_name_the_field(field: str, value: int) -> None:
    with pytest.raises(ConfigurationError, match=field):
        load_settings(**{field: value})


# -- the broker -------------------------------------------------------------------------------


def test_no_broker_by_default() -> None:
    settings = load_settings()
    assert settings.mqtt.url is None and settings.mqtt.devices_url is None
    assert settings.mqtt.username == "control-plane" and settings.mqtt.shared_group
    assert settings.assignment_expires_days == 30


def test_broker_settings_nest_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFLEET_MQTT__URL", "mqtt://127.0.0.1:1884")
    monkeypatch.setenv("EDGEFLEET_MQTT__DEVICE_URL", "mqtts://broker.example.com:8883")
    monkeypatch.setenv("EDGEFLEET_MQTT__PASSWORD", "a-real-secret")
    monkeypatch.setenv("EDGEFLEET_MQTT__PASSWORD_FILE", "/etc/mosquitto/edgefleet.passwd")
    monkeypatch.setenv("EDGEFLEET_MQTT__SHARED_GROUP", "")
    monkeypatch.setenv("EDGEFLEET_ASSIGNMENT_EXPIRES_DAYS", "7")

    settings = load_settings()

    assert settings.mqtt.devices_url == "mqtts://broker.example.com:8883"
    assert settings.mqtt.password_file == Path("/etc/mosquitto/edgefleet.passwd")
    assert settings.mqtt.shared_group == "" and settings.assignment_expires_days == 7
    assert "a-real-secret" not in repr(settings) and "a-real-secret" not in str(settings.mqtt)


@pytest.mark.parametrize("password", ["changethis", "Secret", ""])
def test_a_placeholder_broker_password_is_refused(password: str) -> None:
    with pytest.raises(ConfigurationError, match=r"mqtt\.password is a placeholder"):
        load_settings(mqtt={"url": "mqtt://broker:1883", "password": password})


@pytest.mark.parametrize(
    ("mqtt", "message"),
    [
        ({"url": "mqtt://broker:1883"}, "mqtt.password is needed"),
        ({"url": "http://broker:1883", "password": "a-real-secret"}, "mqtt://host"),
        ({"url": "mqtt://user:pw@broker", "password": "a-real-secret"}, "credentials"),
        ({"url": "mqtt://broker:99999", "password": "a-real-secret"}, "mqtt.url"),
        ({"password_file": "/tmp/passwd"}, "mqtt.password is needed"),
        ({"shared_group": "a/b"}, "mqtt.shared_group"),
    ],
)
def test_unusable_broker_settings_are_refused(mqtt: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_settings(mqtt=mqtt)
