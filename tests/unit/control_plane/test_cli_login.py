"""``save_login`` writes the token file with mode 0600, whatever was there before."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from control_plane.cli._client import Login, config_path, load_login, save_login


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in ("EDGEFLEET_SERVER", "EDGEFLEET_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("EDGEFLEET_CLI_CONFIG", str(tmp_path / "edgefleet" / "fleetctl.json"))
    return config_path()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


LOGIN = Login("https://cp.example", "efo_" + "A" * 43)


def test_a_stale_world_readable_temp_file_does_not_leak_its_mode(config: Path) -> None:
    config.parent.mkdir(parents=True)
    stale = config.with_name(f".{config.name}.tmp")
    stale.write_text("left over by an interrupted save, and much longer than the new content")
    stale.chmod(0o644)

    assert save_login(LOGIN) == config
    assert mode(config) == 0o600
    assert not stale.exists()
    assert json.loads(config.read_text()) == {"server": LOGIN.server, "token": LOGIN.token}
    assert load_login() == LOGIN


def test_an_existing_wider_config_file_is_replaced_with_0600(config: Path) -> None:
    config.parent.mkdir(parents=True)
    config.write_text("{}")
    config.chmod(0o644)
    save_login(LOGIN)
    assert mode(config) == 0o600


def test_mode_is_0600_under_any_umask(config: Path) -> None:
    config.parent.mkdir(parents=True)
    old = os.umask(0o277)  # would leave 0400
    try:
        save_login(LOGIN)
    finally:
        os.umask(old)
    assert mode(config) == 0o600


def test_a_symlink_in_place_of_the_temp_file_is_not_followed(config: Path, tmp_path: Path) -> None:
    config.parent.mkdir(parents=True)
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    config.with_name(f".{config.name}.tmp").symlink_to(target)
    save_login(LOGIN)
    assert target.read_text() == "untouched"
    assert mode(config) == 0o600
    assert not config.is_symlink()
