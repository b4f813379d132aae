"""Fixtures for the packaging tests: wheels built once per session, and install.sh runs.

The install tests use real wheels. pip builds edgefleet and every dependency
into a wheelhouse once per session (from whatever index pip is configured
with: PyPI, a mirror, or a local one), and install.sh installs from it with
``--no-index --find-links``, exactly as an air-gapped device would. That keeps
each install to a few seconds and proves the virtualenv gets a working
``fleet-agent`` with a real model runtime.

Where a test is about how the installer *calls* ``fleet-agent enroll`` (flags,
token in the environment, never enrolling twice), a hand-made stub wheel
stands in for the agent: it records its arguments and environment.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.packaging.support import REPO, unavailable


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """edgefleet[agent,onnx] and its dependencies as wheels, built from this checkout."""
    out = tmp_path_factory.mktemp("wheelhouse")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--disable-pip-version-check",
            "--wheel-dir",
            str(out),
            f"{REPO}[agent,onnx]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        unavailable(f"pip could not build the wheelhouse (no package index?):\n{tail}")
    return out


@pytest.fixture(scope="session")
def project_wheel(wheelhouse: Path) -> Path:
    (wheel,) = wheelhouse.glob("edgefleet-*.whl")
    return wheel


STUB_AGENT = '''\
"""A stand-in for fleet-agent that records how the installer calls it."""
import json
import os
import sys
from pathlib import Path


def main():
    args = sys.argv[1:]
    if args == ["--version"]:
        print("fleet-agent 0.0.0+stub")
        return
    if args[:1] == ["enroll"] and "--help" in args:
        print("Usage: fleet-agent enroll [OPTIONS]")
        if not os.environ.get("STUB_ENROLL_NO_ENVVAR"):
            print("  --token TEXT  enrollment token  [env var: EDGEFLEET_ENROLL_TOKEN]")
        return
    if args[:1] == ["enroll"]:
        data_dir = Path(args[args.index("--data-dir") + 1])
        record = {
            "argv": args,
            "token": os.environ.get("EDGEFLEET_ENROLL_TOKEN"),
            "cwd": os.getcwd(),
        }
        (data_dir / "identity.json").write_text(json.dumps(record))
        return
    sys.exit("stub fleet-agent: unexpected arguments")
'''


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


@pytest.fixture(scope="session")
def stub_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pure-Python wheel whose `fleet-agent` records enroll calls (no build backend needed)."""
    dist_info = "edgefleet_stub-0.0.0.dist-info"
    files = {
        "edgefleet_stub/__init__.py": STUB_AGENT.encode(),
        f"{dist_info}/METADATA": b"Metadata-Version: 2.1\nName: edgefleet-stub\nVersion: 0.0.0\n",
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: edgefleet-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
        f"{dist_info}/entry_points.txt": b"[console_scripts]\nfleet-agent = edgefleet_stub:main\n",
    }
    record = [_record_line(name, data) for name, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    path = tmp_path_factory.mktemp("stub") / "edgefleet_stub-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return path
