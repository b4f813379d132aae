"""The [drift] and [telemetry] sections of agent.toml."""

from __future__ import annotations

import pytest

from agent.config import AgentConfig, dump_config, parse_config
from agent.errors import ConfigError


def test_defaults_drift_on_capture_off() -> None:
    config = AgentConfig()
    assert config.drift.enabled and config.drift.window_s == 60
    assert not config.drift.capture_enabled
    assert config.telemetry.enabled and config.telemetry.window_s == 60


def test_sections_parse_and_round_trip() -> None:
    raw = {
        "drift": {"window_s": 300, "capture_enabled": True, "capture_rate": 0.5},
        "telemetry": {"window_s": 30},
    }
    config = parse_config(raw)
    assert config.drift.window_s == 300 and config.drift.capture_rate == 0.5
    assert config.telemetry.window_s == 30
    assert "[drift]" in dump_config(config) and "capture_max_rows = 1000" in dump_config(config)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"drift": {"window_s": 0}}, "drift.window_s"),
        ({"telemetry": {"window_s": 86401}}, "telemetry.window_s"),
        ({"drift": {"capture_rate": 1.5}}, "capture_rate"),
        ({"drift": {"capture_max_rows": 0}}, "capture_max_rows"),
        ({"drift": {"enabled": "yes"}}, "drift.enabled"),
        ({"drift": {"windw_s": 5}}, "windw_s"),
    ],
)
def test_bad_values_are_refused_by_name(raw: dict[str, dict[str, object]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)
