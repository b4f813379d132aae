"""packaging/systemd/edgefleet-agent.service: the directives, and systemd-analyze's view."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.packaging.support import UNIT_FILE

#: Exposure score systemd-analyze security gives the unit (0 = locked down, 10 = none).
MAX_EXPOSURE = 2.0


def directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT_FILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key}", []).append(value)
    return found


def one(key: str) -> str:
    (value,) = directives()[key]
    return value


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Service.Type", "notify"),
        (
            "Service.ExecStart",
            "/opt/edgefleet/venv/bin/fleet-agent run --config /etc/edgefleet/agent.toml",
        ),
        ("Service.User", "edgefleet"),
        ("Service.Group", "edgefleet"),
        ("Service.WatchdogSec", "60"),
        ("Service.Restart", "on-failure"),
        ("Service.RestartSec", "5"),
        ("Service.NoNewPrivileges", "yes"),
        ("Service.ProtectSystem", "strict"),
        ("Service.ProtectHome", "yes"),
        ("Service.PrivateTmp", "yes"),
        ("Service.PrivateDevices", "yes"),
        ("Service.ReadWritePaths", "/var/lib/edgefleet"),
        ("Service.RuntimeDirectory", "edgefleet"),
        ("Service.StateDirectory", "edgefleet"),
        ("Service.CapabilityBoundingSet", ""),
        ("Service.RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("Service.MemoryDenyWriteExecute", "yes"),
        ("Service.LockPersonality", "yes"),
        ("Service.RestrictRealtime", "yes"),
        ("Service.ProtectKernelTunables", "yes"),
        ("Service.ProtectKernelModules", "yes"),
        ("Service.ProtectKernelLogs", "yes"),
        ("Service.UMask", "0077"),
        ("Install.WantedBy", "multi-user.target"),
    ],
)
def test_directive(key: str, value: str) -> None:
    assert one(key) == value


def test_system_call_filter() -> None:
    assert directives()["Service.SystemCallFilter"] == ["@system-service", "~@privileged"]


def test_accelerator_access_is_documented_not_enabled() -> None:
    text = UNIT_FILE.read_text()
    assert "#DeviceAllow=" in text
    assert "Service.DeviceAllow" not in directives()


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if not path:
        pytest.skip("systemd-analyze is not installed")
    return path


def runnable_copy(tmp_path: Path) -> Path:
    """The unit with an ExecStart that exists here, so verify checks everything else."""
    unit = tmp_path / "edgefleet-agent.service"
    text = UNIT_FILE.read_text().replace("/opt/edgefleet/venv/bin/fleet-agent", "/bin/true")
    unit.write_text(text)
    return unit


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    result = subprocess.run(
        [systemd_analyze(), "verify", runnable_copy(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_systemd_analyze_security_exposure(tmp_path: Path) -> None:
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", runnable_copy(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if "--offline" in result.stderr:
        pytest.skip("systemd-analyze security --offline needs systemd >= 250")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE
