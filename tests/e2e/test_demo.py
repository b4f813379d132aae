"""``fleetctl demo``, the README's main command, runs the whole loop and says so.

The real command in a fresh directory: the model pipeline, a control plane on
the embedded defaults (SQLite, local artifacts, the embedded MQTT broker), six
real agents with their applications, a staged rollout, drift on one site, the
retraining trigger and job, a promoted canary, and a bad release reverted by
its quality gate. Every process it started is gone when it returns.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(600)


def test_the_demo_closes_the_loop(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "control_plane.cli", "demo", "--dir", str(out)],
        env={**env, "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    story = done.stdout
    assert done.returncode == 0, f"{story[-4000:]}\n{done.stderr[-4000:]}"
    for line in (
        "[1/8] Build the reference model",
        "[2/8] Start the control plane: SQLite, local artifact store, embedded MQTT broker",
        "sensor-1.0.0 (ro-",
        "drift alarm on site=south",
        "retraining built and signed sensor release 2",
        "quality gate failed",
        "API docs:",
    ):
        assert line in story, f"{line!r} missing from:\n{story[-6000:]}"
    assert "drift alarm on site=north" not in story
    png = out / "drift-report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The control plane's own record of the loop, read from the stopped demo's database.
    with contextlib.closing(sqlite3.connect(out / "server" / "edgefleet.db")) as db:
        rollouts = {name: (phase, release) for name, phase, release in db.execute(
            "SELECT name, phase, release FROM rollout"
        )}  # fmt: skip
        triggers = db.execute("SELECT status, cohort FROM retraining_trigger").fetchall()
    assert rollouts.pop("sensor-1.0.0") == ("completed", 1)
    assert rollouts.pop("sensor-9.9.9-bad") == ("failed", 3)
    ((name, retrained),) = rollouts.items()
    assert name.endswith("-retrain") and retrained == ("completed", 2)
    assert triggers == [("succeeded", "site=south")]

    # Nothing the demo started is left running.
    left = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True, check=False)
    assert left.stdout.strip() == ""
