"""schemathesis against the live OpenAPI description: no input may cause a 5xx.

The server holds a released model first, so generated requests reach the
registry, release and artifact code, not only 404s.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import SensorBuild
from tests.e2e.conftest import Datasets, Server


def test_no_input_causes_a_server_error(
    server: Server, sensor_build: SensorBuild, datasets: Datasets, tmp_path: Path
) -> None:
    model = sensor_build.model("int8-static")
    server.cli(
        "model", "push", model, "--name", "fuzz", "--version", "1", "--eval-data", datasets.eval
    )
    server.cli("release", "create", "fuzz@1")
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is not installed (pip install -e '.[dev]')"
    done = subprocess.run(
        [
            st, "run", f"{server.url}/openapi.json",
            "--header", f"Authorization: Bearer {server.admin_token}",
            "--checks", "not_a_server_error",
            "--max-examples", "25",
            "--request-timeout", "60",
        ],
        capture_output=True, text=True, timeout=600, check=False,
        cwd=tmp_path,  # schemathesis keeps a cache in its working directory
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:]
    assert "Traceback" not in server.log.read_text(), server.log.read_text()[-6000:]
