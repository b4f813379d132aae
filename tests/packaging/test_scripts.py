"""Shell hygiene for every script that ships: POSIX sh, `set -eu`, shellcheck clean.

Under CI=true shellcheck must be installed (`apt-get install shellcheck`): a
missing linter fails the run instead of skipping it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.packaging.support import BUILD_DEB, DEBIAN_DIR, INSTALL_SH, unavailable

SCRIPTS = [
    INSTALL_SH,
    BUILD_DEB,
    DEBIAN_DIR / "postinst",
    DEBIAN_DIR / "prerm",
    DEBIAN_DIR / "postrm",
]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_posix_sh_with_set_eu(script: Path) -> None:
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/bin/sh"
    assert "set -eu" in lines
    assert script.stat().st_mode & 0o111, f"{script} is not executable"
    for shell in ("dash", "sh"):
        if path := shutil.which(shell):
            result = subprocess.run(
                [path, "-n", script], capture_output=True, text=True, check=False
            )
            assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        unavailable("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(
        [shellcheck, "--shell=sh", "--severity=style", script],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_install_sh_runs_everything_from_main() -> None:
    # A truncated `curl | sh` download must run nothing: the last line calls main.
    lines = [line for line in INSTALL_SH.read_text().splitlines() if line.strip()]
    assert lines[-1] == 'main "$@"'
