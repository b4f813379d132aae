"""Real ``fleet-agent`` processes for end-to-end and fault tests.

Typical use, against a control plane at ``url`` with an enrollment token::

    agent = AgentProcess.create(tmp_path / "agent", server=url, transport="http",
                                update={"probation_s": 2})
    agent.enroll(token, labels={"site": "a"})
    agent.start(pause_at="downloading")        # EDGEFLEET_AGENT_PAUSE_AT
    agent.wait_paused("downloading")           # the agent persisted that state
    agent.kill9()
    agent.start()                              # resumes from the journal
    status = agent.wait_for_state("committed")
    agent.terminate()                          # SIGTERM: clean stop, exit 0

Everything an agent writes (its data directory, configuration and log) lives
under one directory. :meth:`AgentProcess.status` reads ``fleet-agent status``'s
JSON in-process (the same code reading the same files, without a Python start
per poll); ``status(cli=True)`` runs the real command. The log collects
stdout and stderr of every start, and :meth:`wait_for_log` only looks at the
current start's part.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
AGENT = [sys.executable, "-m", "agent"]
PAUSE_ENV = "EDGEFLEET_AGENT_PAUSE_AT"
#: Terminal update states: waiting for another state stops early on these.
TERMINAL = ("committed", "reverted", "failed", "rejected")


def write_config(
    path: Path,
    *,
    server: str,
    data_dir: Path,
    transport: str = "http",
    listen: str = "",
    tables: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write an agent.toml; ``tables`` such as ``{"update": {"probation_s": 2}}``.

    ``listen=""`` disables the local inference API (no port to collide on);
    the HTTP long-poll defaults to 1 s so tests react quickly.
    """

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return json.dumps(str(v))

    extra = tables
    merged: dict[str, dict[str, Any]] = {"http": {"wait_s": 1, "retry_max_s": 2.0}}
    merged["local_api"] = {"listen": listen}
    for name, entries in (extra or {}).items():
        merged.setdefault(name, {}).update(entries)
    lines = [
        f"server = {value(server)}",
        f"data_dir = {value(data_dir)}",
        f"transport = {value(transport)}",
        'log_level = "debug"',
    ]
    for name, entries in merged.items():
        lines += ["", f"[{name}]", *(f"{k} = {value(v)}" for k, v in entries.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class AgentProcess:
    root: Path
    config_path: Path
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    _log_offset: int = 0

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        server: str,
        transport: str = "http",
        env: Mapping[str, str] | None = None,
        **sections: Mapping[str, Any],
    ) -> AgentProcess:
        data_dir = root / "data"
        config = write_config(
            root / "agent.toml",
            server=server,
            data_dir=data_dir,
            transport=transport,
            tables=sections,
        )
        return cls(root, config, data_dir, dict(env or {}))

    @property
    def log_path(self) -> Path:
        return self.root / "agent.log"

    def _env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in (PAUSE_ENV, "NOTIFY_SOCKET")}
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
                "EDGEFLEET_AGENT_CONFIG": str(self.config_path),
                "COLUMNS": "200",
            }
        )
        env.update(self.env)
        env.update(extra or {})
        return env

    # -- commands ------------------------------------------------------------------------

    def cli(
        self, *args: str, check: bool = True, timeout_s: float = 120
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*AGENT, *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            cwd=REPO,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"fleet-agent {' '.join(args)} failed ({done.returncode}):\n{done.stderr}"
            )
        return done

    def enroll(
        self, token: str, *, labels: Mapping[str, str] | None = None, force: bool = False
    ) -> dict[str, Any]:
        server = self._config_value("server")
        args = ["enroll", "--server", server, "--token", token, "--config", str(self.config_path)]
        for key, val in (labels or {}).items():
            args += ["--label", f"{key}={val}"]
        if force:
            args.append("--force")
        self.cli(*args)
        return self.status()

    def _config_value(self, key: str) -> str:
        for line in self.config_path.read_text().splitlines():
            name, _, raw = line.partition("=")
            if name.strip() == key:
                return str(json.loads(raw.strip()))
        raise KeyError(key)

    def status(self, *, cli: bool = False) -> dict[str, Any]:
        if cli:
            return dict(json.loads(self.cli("status", "-o", "json").stdout))
        from agent.config import load_config
        from agent.status import gather

        return gather(load_config(self.config_path))

    # -- the daemon ----------------------------------------------------------------------

    def start(self, *, pause_at: str | None = None, env: Mapping[str, str] | None = None) -> None:
        """Start ``fleet-agent run``; with ``pause_at`` it stops on entering that state."""
        if self.running:
            raise AssertionError("the agent is already running")
        extra = dict(env or {})
        if pause_at is not None:
            extra[PAUSE_ENV] = pause_at
        self.root.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            log.write(f"--- start (pause_at={pause_at}) ---\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self.process = subprocess.Popen(
                [*AGENT, "run", "--config", str(self.config_path)],
                env=self._env(extra),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self, *, current: bool = False) -> str:
        if not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()
        return (
            data[self._log_offset :].decode(errors="replace")
            if current
            else data.decode(errors="replace")
        )

    def kill9(self) -> None:
        """SIGKILL: no cleanup of any kind, exactly like a crash or power cut of the process."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)
        self.process = None

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM and wait; returns the exit status (0 for a clean stop)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"the agent did not stop within {timeout_s} s:\n{self.log()[-3000:]}"
            ) from None
        self.process = None
        return code

    def restart(self, *, pause_at: str | None = None, kill: bool = True) -> None:
        """kill -9 (or SIGTERM with ``kill=False``) and start again."""
        if self.running:
            if kill:
                self.kill9()
            else:
                self.terminate()
        self.start(pause_at=pause_at)

    def stop(self) -> None:
        """Cleanup for fixtures: terminate if running, kill if that hangs."""
        if self.running:
            with contextlib.suppress(AssertionError):
                self.terminate(timeout_s=15)
        self.process = None

    # -- waiting -------------------------------------------------------------------------

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout_s: float = 60, what: str = ""
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status()
            if predicate(status):
                return status
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"the agent exited ({self.process.returncode}) waiting for {what}:\n"
                    f"{self.log(current=True)[-4000:]}"
                )
            time.sleep(0.1)
        raise AssertionError(
            f"timed out waiting for {what or 'a condition'}; last status {status}\n"
            f"{self.log(current=True)[-4000:]}"
        )

    def wait_for_state(
        self, state: str, *, timeout_s: float = 60, sequence: int | None = None
    ) -> dict[str, Any]:
        """Wait until the update state is ``state`` (for assignment ``sequence`` if given).

        Fails early when another terminal state is reached instead.
        """

        def reached(status: dict[str, Any]) -> bool:
            upd = status.get("update") or {}
            if sequence is not None and upd.get("assignment_sequence") != sequence:
                return False
            current = status.get("state")
            if current in TERMINAL and current != state and state in TERMINAL:
                raise AssertionError(f"reached {current} instead of {state}: {status}")
            return bool(current == state)

        return self.wait_for(reached, timeout_s=timeout_s, what=f"state {state}")

    def wait_for_log(self, text: str, *, timeout_s: float = 60) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            current = self.log(current=True)
            if text in current:
                return current
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the agent's log:\n{self.log(current=True)[-4000:]}")

    def wait_paused(self, state: str, *, timeout_s: float = 60) -> None:
        """Wait for the line the test-only pause switch prints on entering ``state``."""
        self.wait_for_log(f"edgefleet-agent: paused at {state}", timeout_s=timeout_s)


__all__ = ["PAUSE_ENV", "TERMINAL", "AgentProcess", "write_config"]
