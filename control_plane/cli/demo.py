"""``fleetctl demo``: the whole loop on one machine, in about three minutes."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from control_plane.cli._common import fail
from control_plane.cli._demo_stack import DemoError, Stack
from control_plane.cli._demo_story import Story


def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Working directory (emptied first).")
    ] = Path("build/demo"),
    agents: Annotated[int, typer.Option(min=2, max=20, help="Local agent processes.")] = 6,
    keep: Annotated[
        bool, typer.Option("--keep/--no-keep", help="Keep everything running until Ctrl-C.")
    ] = False,
) -> None:
    """Build, sign and roll out a model to local agents; drift, retrain, canary, revert a bad one.

    Runs on the embedded defaults (SQLite, a local artifact store, the embedded
    MQTT broker) in DIR; nothing of yours is touched. Every step is a real
    command; logs stay in DIR.
    """
    # Markup on (the story's own text only); wide enough off a terminal for its tables.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    root = directory.resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("EDGEFLEET_") or k == "EDGEFLEET_KEY_PASSPHRASE"
    }
    env["EDGEFLEET_CLI_CONFIG"] = str(root / "fleetctl.json")
    env.setdefault("COLUMNS", str(console.width))  # the commands' tables fit the story's width
    stack = Stack(root, env)
    story = Story(stack, console, agents, root / "build")

    def _stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        story.build_model()
        story.start_control_plane()
        story.release_v1()
        story.start_fleet()
        story.roll_out_v1()
        story.drift()
        story.retrain()
        story.bad_release()
        story.where_to_look(keep)
        if keep:
            console.print("everything keeps running; Ctrl-C stops it")
            while True:
                time.sleep(3600)
    except DemoError as exc:
        raise fail(f"{exc} (logs in {root})") from None
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        stack.stop()


__all__ = ["demo"]
