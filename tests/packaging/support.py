"""Helpers for the packaging tests: paths, the CI rule, and running install.sh."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL_SH = REPO / "packaging/install.sh"
BUILD_DEB = REPO / "packaging/debian/build-deb.sh"
DEBIAN_DIR = REPO / "packaging/debian"
UNIT_FILE = REPO / "packaging/systemd/edgefleet-agent.service"
CONTAINERFILE = REPO / "packaging/container/Containerfile"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> NoReturn:
    """Skip locally; under CI=true a missing prerequisite is a failure."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the packaging checks must run)")
    pytest.skip(reason)


def shell() -> str:
    """dash when available: the installer must work with Debian's /bin/sh."""
    return shutil.which("dash") or "/bin/sh"


def run_install(
    *args: str | Path, env: Mapping[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run install.sh the way `curl ... | sudo sh -s -- ARGS` does: the script on stdin."""
    environ = {k: v for k, v in os.environ.items() if k != "EDGEFLEET_ENROLL_TOKEN"}
    environ.update(env or {})
    with INSTALL_SH.open("rb") as script:
        return subprocess.run(
            [shell(), "-s", "--", *map(str, args)],
            stdin=script,
            capture_output=True,
            text=True,
            env=environ,
            timeout=timeout,
            check=False,
        )
