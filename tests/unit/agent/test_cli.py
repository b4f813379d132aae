"""fleet-agent's commands that need no server: uninstall forwarding, status, config errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from agent.cli import app


def test_uninstall_is_forwarded_with_its_own_options() -> None:
    result = CliRunner().invoke(app, ["uninstall", "--help"])
    assert result.exit_code == 0, result.output
    assert "--purge" in result.stdout
    refused = CliRunner().invoke(app, ["uninstall", "--purge"])
    assert refused.exit_code == 2  # --purge without --yes deletes nothing
    assert "--yes" in refused.stderr


def test_status_of_a_fresh_device(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["status", "-o", "json", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["enrolled"] is False and facts["running"] is False
    assert facts["outbox"] == {"depth": 0, "dropped": 0, "next_seq": 1}
    table = CliRunner().invoke(app, ["status", "--data-dir", str(tmp_path)])
    assert "not enrolled" in table.stdout
    wrong = CliRunner().invoke(app, ["status", "-o", "yaml", "--data-dir", str(tmp_path)])
    assert wrong.exit_code == 2


def test_a_broken_config_file_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('transport = "pigeon"\n')
    result = CliRunner().invoke(app, ["status", "--config", str(config)])
    assert result.exit_code == 78
    assert "transport must be one of" in result.stderr


def test_config_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'data_dir = "{tmp_path / "d"}"\n')
    result = CliRunner().invoke(
        app, ["status", "-o", "json"], env={"EDGEFLEET_AGENT_CONFIG": str(config)}
    )
    assert json.loads(result.stdout)["data_dir"] == str(tmp_path / "d")
