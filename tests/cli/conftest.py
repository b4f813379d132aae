from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from control_plane.cli import app


class Fleetctl:
    """Runs fleetctl in-process and returns (exit code, stdout, stderr)."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(
        self, *args: str | Path, env: dict[str, str] | None = None
    ) -> tuple[int, str, str]:
        result = self.runner.invoke(app, [str(a) for a in args], env=env)
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def fleetctl(monkeypatch: pytest.MonkeyPatch) -> Fleetctl:
    monkeypatch.delenv("EDGEFLEET_KEY_PASSPHRASE", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    return Fleetctl()


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-feature, 3-class softmax model (``models.tiny``), as a file."""
    from models.tiny import tiny_onnx_bytes

    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    path.write_bytes(tiny_onnx_bytes())
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def keydir(tmp_path: Path, fleetctl: Fleetctl) -> Iterator[Path]:
    code, _, _ = fleetctl("keys", "init", tmp_path / "trust")
    assert code == 0
    yield tmp_path / "trust"
