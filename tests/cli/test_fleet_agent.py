"""fleet-agent's command line."""

from __future__ import annotations

from typer.testing import CliRunner

from agent.cli import app
from fleetcore import __version__


def test_runtimes_lists_what_is_installed() -> None:
    result = CliRunner().invoke(app, ["runtimes"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "onnxruntime" in result.stdout


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"fleet-agent {__version__}"
