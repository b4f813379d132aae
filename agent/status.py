"""``fleet-agent status``: what the device is, serves and is doing, read from disk.

Theory of operation. Status never talks to the daemon: it reads the identity
file, the slot pointer and the state database (read-only; WAL lets it read
while the daemon writes) and checks whether the data directory's lock is held
(a running agent). So it works the same whether the agent runs, crashed or
was never started, and tests can poll it while they kill agents.

The JSON form (``-o json``) is stable for scripts and tests::

    {"device_id", "enrolled", "server", "data_dir", "running", "pid",
     "transport": {"configured", "current", "since"},
     "state", "reason", "message",
     "update": {"target", "assignment_sequence", "attempts", "boots",
                "probation_observed_s", "done"} | null,
     "active", "committed", "previous": {"model", "release", "sha256"} | null,
     "outbox": {"depth", "dropped", "next_seq"}, "agent_version"}
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.errors import AgentError, NotEnrolledError
from agent.identity import load_identity
from agent.journal import Journal, JournalStore, Release
from agent.link import LINK_KEY
from agent.lock import LOCK_FILE
from agent.outbox import read_stats
from agent.slots import read_active
from agent.statedb import DB_FILE, StateDB
from fleetcore import __version__


def _release(release: Release | None) -> dict[str, Any] | None:
    return None if release is None else release.installed().to_dict()


def running_pid(data_dir: Path) -> int | None:
    """The pid of the agent holding the data directory, or None when none runs."""
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = path.read_text().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def gather(config: AgentConfig) -> dict[str, Any]:
    data_dir = config.data_dir
    out: dict[str, Any] = {
        "device_id": None,
        "enrolled": False,
        "server": config.server or None,
        "data_dir": str(data_dir),
        "running": False,
        "pid": None,
        "transport": {"configured": config.transport, "current": None, "since": None},
        "state": None,
        "reason": None,
        "message": None,
        "update": None,
        "active": None,
        "committed": None,
        "previous": None,
        "outbox": {"depth": 0, "dropped": 0, "next_seq": 1},
        "agent_version": __version__,
        "error": None,
    }
    try:
        identity = load_identity(data_dir)
        out.update(device_id=identity.device_id, enrolled=True, server=identity.server)
    except NotEnrolledError:
        pass
    except AgentError as exc:
        out["error"] = exc.one_line()
    pid = running_pid(data_dir)
    out.update(running=pid is not None, pid=pid)
    with contextlib.suppress(ValueError, KeyError, OSError):
        active = read_active(data_dir)
        if active is not None:
            out["active"] = {
                "model": active.model,
                "release": active.release,
                "sha256": active.sha256,
            }
    if (data_dir / DB_FILE).exists():
        try:
            _from_db(StateDB(data_dir / DB_FILE, readonly=True), out)
        except AgentError as exc:
            out["error"] = exc.one_line()
    return out


def _from_db(db: StateDB, out: dict[str, Any]) -> None:
    try:
        journal: Journal = JournalStore(db).load()
        stats = read_stats(db)
        link = db.get(LINK_KEY)
    finally:
        db.close()
    upd = journal.update
    out.update(
        state=journal.state.value,
        reason=journal.reason,
        message=journal.message,
        committed=_release(journal.committed),
        previous=_release(journal.previous),
        outbox={"depth": stats.depth, "dropped": stats.dropped, "next_seq": stats.next_seq},
    )
    if upd is not None:
        out["update"] = {
            "target": _release(upd.target),
            "assignment_sequence": upd.sequence,
            "attempts": upd.attempts,
            "boots": upd.boots,
            "probation_observed_s": round(upd.probation_observed_s, 3),
            "done": upd.done,
        }
    if isinstance(link, dict) and out["running"]:
        out["transport"].update(current=link.get("transport"), since=link.get("since"))


def rows(status: dict[str, Any]) -> list[tuple[str, str]]:
    """The human form: (label, value) pairs."""

    def rel(value: dict[str, Any] | None) -> str:
        if value is None:
            return "-"
        return f"{value['model']} r{value['release']} ({value['sha256'][:12]}…)"

    upd = status["update"]
    state = status["state"] or "-"
    if status["reason"]:
        state += f" ({status['reason']}: {status['message']})"
    transport = status["transport"]
    outbox = status["outbox"]
    lines = [
        ("device", status["device_id"] or "not enrolled"),
        ("server", status["server"] or "-"),
        ("agent", f"running (pid {status['pid']})" if status["running"] else "not running"),
        ("transport", f"{transport['configured']} (now: {transport['current'] or '-'})"),
        ("active", rel(status["active"])),
        ("previous", rel(status["previous"])),
        ("update state", state),
        ("update target", rel(upd["target"]) if upd else "-"),
        ("outbox", f"{outbox['depth']} queued, {outbox['dropped']} dropped"),
    ]
    if status["error"]:
        lines.append(("error", status["error"]))
    return lines


__all__ = ["gather", "rows", "running_pid"]
