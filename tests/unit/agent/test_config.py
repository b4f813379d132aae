"""Agent configuration: defaults, strict parsing, the path rules, a round trip through TOML."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    AgentConfig,
    dump_config,
    load_config,
    parse_config,
    resolve_config_path,
    save_config,
    with_overrides,
)
from agent.errors import ConfigError


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path / "absent.toml")
    assert config == AgentConfig()
    assert config.data_dir == Path("/var/lib/edgefleet")
    assert config.transport == "auto"
    assert config.local_api.listen == "127.0.0.1:8470"


def test_round_trip(tmp_path: Path) -> None:
    config = parse_config(
        {
            "server": "https://fleet.example/",
            "data_dir": str(tmp_path),
            "transport": "http",
            "tls_ca_path": "/etc/edgefleet/ca.pem",
            "update": {"probation_s": 60, "max_error_rate": 0.1, "crash_loop_boots": 5},
            "local_api": {"listen": "unix:/run/edgefleet/agent.sock"},
            "mqtt": {"keepalive_s": 30},
        }
    )
    assert config.server == "https://fleet.example"
    assert config.update.probation_s == 60.0 and isinstance(config.update.probation_s, float)
    path = tmp_path / "agent.toml"
    save_config(config, path)
    assert load_config(path) == config
    assert "[update]" in path.read_text()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"update": {"probation": 60}}, "unknown key 'probation' in \\[update\\]"),
        ({"surprise": 1}, "unknown key 'surprise'"),
        ({"transport": "carrier-pigeon"}, "transport must be one of"),
        ({"update": {"probation_s": "soon"}}, "update.probation_s must be float"),
        ({"update": {"crash_loop_boots": 1.5}}, "must be int"),
        ({"update": {"max_error_rate": 2.0}}, "between 0 and 1"),
        ({"mqtt": {"keepalive_s": -1}}, "must not be negative"),
        ({"server": "ftp://x"}, "http:// or https://"),
        ({"data_dir": "relative/dir"}, "absolute"),
        ({"local_api": {"listen": "8470"}}, "host:port or unix:"),
        ({"http": 5}, "must be a table"),
    ],
)
def test_invalid_configuration_is_refused_by_name(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("server = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_path_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert resolve_config_path(None) == DEFAULT_CONFIG_PATH
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "env.toml"))
    assert resolve_config_path(None) == tmp_path / "env.toml"
    assert resolve_config_path(tmp_path / "cli.toml") == tmp_path / "cli.toml"


def test_dump_writes_every_key_and_no_secret_fields() -> None:
    text = dump_config(with_overrides(AgentConfig(), server="https://cp"))
    assert 'server = "https://cp"' in text
    assert "probation_s = 300.0" in text
    for secret in ("token", "password", "private"):
        assert secret not in text
