"""The ``command`` action: run an argv list locally, without a shell.

The child gets the trigger document on stdin and, for jobs that read files,
the path of a temporary copy (mode 0600, removed afterwards) in
``EDGEFLEET_DRIFT_EVIDENCE``. Its environment is built, not inherited: a few
harmless variables (``PATH``, ``HOME``, locale, ``TMPDIR``), the ones the
action names in ``env_from``, its ``env``, and ``EDGEFLEET_*`` facts about the
trigger. The control plane's own secrets (database URL, key passphrase) never
reach it. On timeout the whole process group is killed, grandchildren too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from control_plane.retraining.actions import CommandAction

_PASSED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")
_TAIL = 300


def child_env(
    action: CommandAction, payload: Mapping[str, Any], environ: Mapping[str, str], path: str
) -> dict[str, str]:
    env = {k: environ[k] for k in _PASSED if k in environ}
    env.update({k: environ[k] for k in action.env_from if k in environ})
    env.update(dict(action.env))
    env.update(
        EDGEFLEET_DRIFT_EVIDENCE=path,
        EDGEFLEET_IDEMPOTENCY_KEY=str(payload["idempotency_key"]),
        EDGEFLEET_POLICY=str(payload["policy"]),
        EDGEFLEET_MODEL=str(payload["model"]),
        EDGEFLEET_RELEASE=str(payload["release"]),
        EDGEFLEET_CANARY_APPROVAL="true" if payload["canary_approval"] else "false",
    )
    return env


def run_command(
    action: CommandAction, payload: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[bool, bool, str]:
    """Run once: ``(ok, retryable, detail)``; ``detail`` holds no secret passed in ``env_from``."""
    body = json.dumps(payload, sort_keys=True).encode()
    secrets = [environ[k] for k in action.env_from if environ.get(k)]
    fd, path = tempfile.mkstemp(prefix="edgefleet-drift-", suffix=".json")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        try:
            proc = subprocess.Popen(  # noqa: S603 - an argv list from the policy, no shell
                list(action.argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=child_env(action, payload, environ, path),
                cwd=action.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            return False, False, f"cannot start {action.argv[0]}: {exc.strerror or exc}"
        try:
            _, stderr = proc.communicate(body, timeout=action.delivery.timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return False, True, f"timed out after {action.delivery.timeout_s:g}s"
        if proc.returncode == 0:
            return True, False, "exit status 0"
        tail = " ".join(stderr.decode(errors="replace").split())[-_TAIL:]
        for secret in secrets:
            tail = tail.replace(secret, "***")
        return False, True, f"exit status {proc.returncode}" + (f": {tail}" if tail else "")
    finally:
        with contextlib.suppress(OSError):
            Path(path).unlink()


__all__ = ["child_env", "run_command"]
