"""Retraining tests: a migrated SQLite database, a clock, evidence, and a recording HTTP server.

:class:`Receiver` is a real ``http.server`` in a thread: it records every
request (method, path, headers, JSON body) and answers with the statuses it
was told to, in order, then 200; tests check the request shapes on it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from control_plane.db.engine import make_engine
from control_plane.db.migrate import upgrade
from control_plane.retraining import DriftEvidence, RetrainingService
from control_plane.retraining.dispatch import Dispatcher
from control_plane.store._retraining_sql import SqlRetrainingStore

START = datetime(2025, 3, 1, 10, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def database(tmp: Path) -> str:
    url = f"sqlite:///{tmp / 'edgefleet.db'}"
    upgrade(url)
    return url


def service(
    url: str,
    clock: Clock,
    *,
    owner: str = "test",
    environ: dict[str, str] | None = None,
    allow_commands: bool = False,
) -> RetrainingService:
    """A service on ``url`` whose worker is not started: tests call ``tick``."""
    store = SqlRetrainingStore(make_engine(url))
    dispatcher = Dispatcher(store, clock, owner, environ=environ or {})
    return RetrainingService(store, clock, dispatcher, allow_commands=allow_commands)


def evidence(**changes: Any) -> DriftEvidence:
    values: dict[str, Any] = {
        "model": "sensor",
        "release": 3,
        "cohort": None,
        "window_start": START - timedelta(hours=4),
        "window_end": START,
        "drifted_features": [
            {"name": "f3", "test": "chi2", "p_value": 1e-9, "q_value": 1e-8, "effect": 0.4}
        ],
        "share_traffic": 0.6,
        "share_devices": 0.5,
        "windows_drifted": 4,
        "windows_considered": 4,
        "estimated_accuracy": 0.81,
        "reference_accuracy": 0.9,
        "accuracy_interval": (0.78, 0.84),
        "labelled": False,
    }
    values.update(changes)
    return DriftEvidence(**values)


def policy_doc(name: str = "sensor-drift", actions: list[dict[str, Any]] | None = None,
               **spec: Any) -> dict[str, Any]:  # fmt: skip
    body: dict[str, Any] = {
        "model": "sensor",
        "breadth": {"min_share_traffic": 0.3, "min_share_devices": 0.2},
        "persistence": {"windows": 3, "of": 4},
        "min_accuracy_drop": 2.0,
        "cooldown": "6h",
        "actions": actions or [{"type": "webhook", "url": "http://127.0.0.1:9/hook"}],
    }
    body.update(spec)
    return {"apiVersion": "edgefleet/v1", "kind": "DriftPolicy", "metadata": {"name": name},
            "spec": body}  # fmt: skip


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Receiver:
    url: str
    requests: list[Seen] = field(default_factory=list)
    #: Statuses to answer with, in order; then 200.
    script: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_status(self) -> int:
        with self.lock:
            return self.script.pop(0) if self.script else 200


@contextmanager
def receiver(script: list[int] | None = None) -> Iterator[Receiver]:
    state = Receiver("", script=list(script or []))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
            state.requests.append(
                Seen("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            status = state.next_status()
            answer = json.dumps({"status": status}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
